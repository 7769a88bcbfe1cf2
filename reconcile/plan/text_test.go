package plan

import "testing"

func TestMarkdownEscaping(t *testing.T) {
	for in, want := range map[string]string{
		"plain":      "`plain`",
		"a|b":        "`a\\|b`",
		"x`y":        "`` x`y ``",
		"``":         "``` `` ```",
		" padded ":   "`  padded  `",
		"two\nlines": "`two lines`",
	} {
		if got := mdCode(in); got != want {
			t.Errorf("mdCode(%q) = %q, want %q", in, got, want)
		}
	}
	if got, want := mdText("Fix *all* <b>|@alice #3"), `Fix \*all\* \<b\>\|\@alice \#3`; got != want {
		t.Errorf("mdText = %q, want %q", got, want)
	}
}
