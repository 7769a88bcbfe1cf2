package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// Dataplane is one of the six bookinfo processes as the Dataplanes of
// examples/bookinfo/policies have them.
type Dataplane struct {
	Name, Service, Version string
	Port                   int // the inbound's port on 127.0.0.1
}

// Dataplanes are the six processes of bookinfo.
var Dataplanes = []Dataplane{
	{"productpage-v1", "productpage", "v1", 19080},
	{"details-v1", "details", "v1", 19081},
	{"ratings-v1", "ratings", "v1", 19082},
	{"reviews-v1", "reviews", "v1", 19083},
	{"reviews-v2", "reviews", "v2", 19084},
	{"reviews-v3", "reviews", "v3", 19085},
}

// Services are the bookinfo services by name, for a runner that starts
// them by name.
var Services = map[string]func(ctx context.Context, log *slog.Logger, o Options) error{
	"productpage": Productpage,
	"details":     Details,
	"reviews":     Reviews,
	"ratings":     Ratings,
}

// Details serves a book's details.
func Details(ctx context.Context, log *slog.Logger, o Options) error {
	log.Info("serving", "listen", o.Listen)
	return Serve(ctx, log, o.Listen, func(_ context.Context, req *Request) (*Reply, error) {
		return &Reply{Service: "details", Version: o.Version,
			Body: fmt.Sprintf("%s: paperback, 200 pages, English", req.Product)}, nil
	})
}

// Ratings serves a book's stars.
func Ratings(ctx context.Context, log *slog.Logger, o Options) error {
	log.Info("serving", "listen", o.Listen)
	return Serve(ctx, log, o.Listen, func(context.Context, *Request) (*Reply, error) {
		return &Reply{Service: "ratings", Version: o.Version, Stars: 4}, nil
	})
}

// Reviews serves a book's reviews: v1 without ratings, v2 and v3 with the
// stars they get from ratings (black in v2, red in v3, as in the
// original). The end user of a request goes on to ratings.
func Reviews(ctx context.Context, log *slog.Logger, o Options) error {
	var ratings *Client
	if o.Version != "v1" {
		c, err := Dial("ratings")
		if err != nil {
			return err
		}
		defer c.Close()
		ratings = c
	}
	log.Info("serving", "listen", o.Listen, "calls_ratings", ratings != nil)
	return Serve(ctx, log, o.Listen, func(ctx context.Context, req *Request) (*Reply, error) {
		r := &Reply{Service: "reviews", Version: o.Version, Body: "An extremely entertaining play by Shakespeare."}
		if ratings == nil {
			return r, nil
		}
		call := ratings.Call(WithEndUser(ctx, EndUser(ctx)), "ratings", req)
		r.Calls = append(r.Calls, call)
		if call.OK {
			r.Stars = call.Reply.Stars
			color := map[string]string{"v2": "black", "v3": "red"}[o.Version]
			r.Body += fmt.Sprintf(" (%d %s stars)", r.Stars, color)
		}
		return r, nil
	})
}

// Productpage serves the page over plain HTTP (GET / for people, GET
// /api/page as JSON), calling details and reviews through the mesh for
// each request, and is itself a gRPC server in the mesh. The end user of a
// page, from the query (?user=jason) or the end-user header over HTTP and
// from the end-user metadata over gRPC, goes with both calls as their
// end-user header.
func Productpage(ctx context.Context, log *slog.Logger, o Options) error {
	c, err := Dial("details", "reviews")
	if err != nil {
		return err
	}
	defer c.Close()
	page := func(ctx context.Context, user string) *Reply {
		req := &Request{Product: "The Comedy of Errors"}
		ctx = WithEndUser(ctx, user)
		return &Reply{Service: "productpage", Version: o.Version, Body: req.Product, User: user,
			Calls: []Call{c.Call(ctx, "details", req), c.Call(ctx, "reviews", req)}}
	}
	user := func(r *http.Request) string {
		if u := r.URL.Query().Get("user"); u != "" {
			return u
		}
		return r.Header.Get(EndUserHeader)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(page(r.Context(), user(r)))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, Summary(page(r.Context(), user(r))))
	})
	lis, err := net.Listen("tcp", o.HTTP)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(lis) }()
	defer hs.Close()
	log.Info("serving", "listen", o.Listen, "http", lis.Addr().String())
	return Serve(ctx, log, o.Listen, func(ctx context.Context, _ *Request) (*Reply, error) { return page(ctx, EndUser(ctx)), nil })
}

// Summary is a page in one line: the end user it is for, if any, then each
// call and who answered it.
func Summary(page *Reply) string {
	var parts []string
	for _, c := range page.Calls {
		switch {
		case !c.OK:
			parts = append(parts, fmt.Sprintf("%s: %s", c.Service, c.Code))
		case c.Reply.Service == "reviews" && c.Reply.Stars > 0:
			parts = append(parts, fmt.Sprintf("reviews %s (ratings: %s)", c.Reply.Version, strings.Repeat("*", c.Reply.Stars)))
		case c.Reply.Service == "reviews" && len(c.Reply.Calls) > 0:
			parts = append(parts, fmt.Sprintf("reviews %s (ratings: %s)", c.Reply.Version, c.Reply.Calls[0].Code))
		default:
			parts = append(parts, fmt.Sprintf("%s %s", c.Reply.Service, c.Reply.Version))
		}
	}
	if page.User != "" {
		return page.User + ": " + strings.Join(parts, " | ")
	}
	return strings.Join(parts, " | ")
}
