package certagent

import "errors"

// The kinds of error Run returns, for callers that branch on them with
// errors.Is. The error itself says what happened; its kind is not part of
// its message.
var (
	// ErrNoCertificate: a Once run ended without a certificate, because
	// its Timeout passed, its context ended first, or the node's mesh has
	// no mTLS.
	ErrNoCertificate = errors.New("no certificate")
	// ErrAddress: gRPC cannot dial the XDSAddress at all.
	ErrAddress = errors.New("unusable xDS address")
	// ErrWrite: a Once run got a good certificate but could not write its
	// files; the old files are kept. (A running agent retries instead.)
	ErrWrite = errors.New("cannot write the certificate files")
)

// kindError is an error that ends Run, of kind ErrNoCertificate,
// ErrAddress or ErrWrite.
type kindError struct {
	kind error
	err  error
}

func final(kind, err error) error { return &kindError{kind: kind, err: err} }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// isFinal reports whether err ends Run rather than its stream.
func isFinal(err error) bool {
	var k *kindError
	return errors.As(err, &k)
}
