package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"sync"
)

// ContentIDFS is a file system that can name a file's content without reading
// it, as a git tree names each file by its blob id. Two files with the same
// content ID hold the same bytes, whichever ContentIDFS they come from (so ids
// must be global, as git object ids are); the converse need not hold.
// ContentID follows symbolic links as Open does. The loader uses it to find
// unchanged files in a Cache without reading them.
type ContentIDFS interface {
	fs.FS
	ContentID(name string) (string, error)
}

// Cache keeps what loading each file produced (its resources and its own
// findings), so that a later load of a tree where most files are unchanged
// parses and validates only the files that changed. A file's result is reused
// when a file of the same name (with the Tree's Prefix) has the same content:
// the same content ID where the file system is a ContentIDFS, the same SHA-256
// of its bytes otherwise. A symbolic link is keyed by its name and the content
// of the file it resolves to.
//
// A Cache holds only the files that the last two loads to complete used (and
// those that loads still running use), so it stays about the size of one
// parsed tree (tens of megabytes for 10,000 resources: the YAML node trees that
// findings point into). It is safe for concurrent use, also by several
// Loaders: results are kept apart by the limits that shape them.
//
// Results taken from a Cache are equal to what a load without it returns. The
// resources of unchanged files are the very pointers of the previous Result's
// Set; a Set is immutable, so consumers may compare them by identity.
type Cache struct {
	mu    sync.Mutex
	files map[cacheKey]*cachedFile
	gen   uint64 // generation of the latest load started
	done  uint64 // generation of the latest load completed
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{files: map[cacheKey]*cachedFile{}}
}

// Len returns the number of file results the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.files)
}

// fileLimits are the options that shape one file's result.
type fileLimits struct {
	maxFileBytes       int64
	maxDepth, maxNodes int
}

type cacheKey struct {
	name    string // the file's name in findings
	content string // "id:" + a ContentIDFS id, or "sha256:" + hex digest
	limits  fileLimits
}

type cachedFile struct {
	res  fileResult
	used uint64 // generation of the latest load that used it
}

// begin starts a load and returns its generation.
func (c *Cache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	return c.gen
}

// end completes load gen: files that neither it nor the load completed before
// it used are dropped (unless a load started later uses them).
func (c *Cache) end(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := min(gen, c.done)
	for k, f := range c.files {
		if f.used < keep {
			delete(c.files, k)
		}
	}
	c.done = max(c.done, gen)
}

func (c *Cache) get(k cacheKey, gen uint64) (fileResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.files[k]
	if !ok {
		return fileResult{}, false
	}
	f.used = max(f.used, gen)
	return f.res, true
}

func (c *Cache) put(k cacheKey, res fileResult, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.files[k]; ok { // another load of the same content won
		f.used = max(f.used, gen)
		return
	}
	c.files[k] = &cachedFile{res: res, used: gen}
}

// loadFileCached is loadFile through the cache. It reads the file only when
// the file system cannot name its content or the cache does not hold it.
// Results that depend on more than the content (an I/O error) are not kept.
func (l *Loader) loadFileCached(f file, c *Cache, gen uint64) fileResult {
	key := cacheKey{name: f.name, limits: fileLimits{l.opts.MaxFileBytes, l.opts.MaxDepth, l.opts.MaxNodes}}
	if ids, ok := f.fsys.(ContentIDFS); ok {
		if id, err := ids.ContentID(f.target); err == nil {
			key.content = "id:" + id
			if res, ok := c.get(key, gen); ok {
				return res
			}
			data, fnd := l.readFile(f)
			if fnd != nil && fnd.Code != CodeFileTooLarge {
				return fileResult{findings: []Finding{*fnd}}
			}
			var res fileResult
			if fnd != nil { // too large: that depends on the content only
				res.findings = []Finding{*fnd}
			} else {
				res = l.loadBytes(f.name, data)
			}
			c.put(key, res, gen)
			return res
		}
	}
	data, fnd := l.readFile(f)
	if fnd != nil {
		return fileResult{findings: []Finding{*fnd}}
	}
	sum := sha256.Sum256(data)
	key.content = "sha256:" + hex.EncodeToString(sum[:])
	if res, ok := c.get(key, gen); ok {
		return res
	}
	res := l.loadBytes(f.name, data)
	c.put(key, res, gen)
	return res
}
