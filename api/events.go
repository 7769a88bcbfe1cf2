package api

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// DefaultEventsInterval is how often GET /events looks for a change when
// Config.EventsInterval is not set.
const DefaultEventsInterval = time.Second

// maxEventStreams bounds the event streams open at once.
const maxEventStreams = 64

// keepAlive is how often an idle event stream gets a comment, so that
// proxies between the browser and the daemon keep it open.
const keepAlive = 15 * time.Second

// events answers GET /events: a server-sent event stream with an event
// `change` whenever the status, the history or a proxy's versions change
// (a push, an invalid commit, a NACK, an ACK, a rollback, a resume). Its
// data is {"version": N}, N counting the changes seen on this stream; a
// client fetches /status, /history or /proxies again when it arrives.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	if s.streams.Add(1) > maxEventStreams {
		s.streams.Add(-1)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many event streams (%d)", maxEventStreams))
		return
	}
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	interval := s.cfg.EventsInterval
	if interval <= 0 {
		interval = DefaultEventsInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last [sha256.Size]byte
	version, idle := 0, time.Duration(0)
	write := func(msg string) bool {
		// The server's write timeout is for requests; a stream extends it
		// at each write.
		_ = rc.SetWriteDeadline(time.Now().Add(keepAlive + time.Minute))
		if _, err := fmt.Fprint(w, msg); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 2000\n\n") {
		return
	}
	for {
		if fp := s.fingerprint(); fp != last {
			last, idle = fp, 0
			version++
			if !write(fmt.Sprintf("id: %d\nevent: change\ndata: {\"version\":%d}\n\n", version, version)) {
				return
			}
		} else if idle += interval; idle >= keepAlive {
			idle = 0
			if !write(": keep-alive\n\n") {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// fingerprint sums what the console shows of the daemon: it changes when
// the status, the newest history records or a proxy's versions do.
func (s *server) fingerprint() [sha256.Size]byte {
	hash := sha256.New()
	enc := json.NewEncoder(hash)
	st := s.b.Status()
	st.LastSync = time.Time{} // every poll of the remote moves it
	_ = enc.Encode(st)
	hist := s.b.History()
	_ = enc.Encode(len(hist))
	_ = enc.Encode(hist[:min(len(hist), 20)])
	for _, p := range s.b.Proxies() {
		_, _ = fmt.Fprint(hash, p.NodeID, p.Streams, p.Commit)
		for _, t := range p.Types {
			_, _ = fmt.Fprint(hash, t.TypeURL, t.Published, t.Sent, t.Acked, t.Subscribed)
			if t.LastNACK != nil {
				_, _ = fmt.Fprint(hash, t.LastNACK.Version, t.LastNACK.At.UnixNano())
			}
		}
	}
	var sum [sha256.Size]byte
	copy(sum[:], hash.Sum(nil))
	return sum
}
