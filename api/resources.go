package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gitmesh/gitmesh/schema"
)

// Paging of the resource lists, as Kuma's API server does it: `size` items
// from `offset`, and `next` the URL of the following page (null on the last).
const (
	defaultPageSize = 1000
	maxPageSize     = 10000
)

// CommitHeader names, on every answer of the resource API, the commit the
// resources come from.
const CommitHeader = "X-Gitmesh-Commit"

// list is a page of resources in Kuma's shape.
type list[T any] struct {
	Total int     `json:"total"`
	Items []T     `json:"items"`
	Next  *string `json:"next"`
}

// answer is the outcome of a read of the served set: a body, or an error
// with its status.
type answer struct {
	code int
	body any
}

func found(v any) answer { return answer{http.StatusOK, v} }

func notFound(format string, args ...any) answer {
	return answer{http.StatusNotFound, errorBody{Error: fmt.Sprintf(format, args...)}}
}

type readFunc func(set *schema.Set, r *http.Request) answer

// served runs read over the served set, answering 503 while nothing is
// served yet.
func (s *server) served(read readFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		res, commit, ok := s.b.Served()
		if !ok || res == nil || res.Set == nil {
			writeError(w, http.StatusServiceUnavailable, "no commit is served yet")
			return
		}
		w.Header().Set(CommitHeader, string(commit.Hash))
		a := read(res.Set, r)
		writeJSON(w, a.code, a.body)
	}
}

func listMeshes(set *schema.Set, r *http.Request) answer {
	return paged(r, set.Meshes, toMesh)
}

func getMesh(set *schema.Set, r *http.Request) answer {
	name := r.PathValue("mesh")
	m := set.Mesh(name)
	if m == nil {
		return notFound("mesh %q not found", name)
	}
	return found(toMesh(m))
}

func listDataplanes(set *schema.Set, r *http.Request) answer {
	mesh := r.PathValue("mesh")
	if set.Mesh(mesh) == nil {
		return notFound("mesh %q not found", mesh)
	}
	return paged(r, set.DataplanesIn(mesh), toDataplane)
}

func getDataplane(set *schema.Set, r *http.Request) answer {
	dp, missing := pathDataplane(set, r)
	if dp == nil {
		return missing
	}
	return found(toDataplane(dp))
}

// pathDataplane is the dataplane the path's {mesh} and {name} name; nil
// and the 404 to answer when the mesh or the dataplane is unknown.
func pathDataplane(set *schema.Set, r *http.Request) (*schema.Dataplane, answer) {
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	if set.Mesh(mesh) == nil {
		return nil, notFound("mesh %q not found", mesh)
	}
	dp := set.Dataplane(mesh, name)
	if dp == nil {
		return nil, notFound("dataplane %q not found in mesh %q", name, mesh)
	}
	return dp, answer{}
}

func listPermissions(set *schema.Set, r *http.Request) answer {
	mesh := r.PathValue("mesh")
	if set.Mesh(mesh) == nil {
		return notFound("mesh %q not found", mesh)
	}
	return paged(r, set.PermissionsIn(mesh), toPermission)
}

func getPermission(set *schema.Set, r *http.Request) answer {
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	if set.Mesh(mesh) == nil {
		return notFound("mesh %q not found", mesh)
	}
	for _, tp := range set.PermissionsIn(mesh) {
		if tp.Name == name {
			return found(toPermission(tp))
		}
	}
	return notFound("traffic permission %q not found in mesh %q", name, mesh)
}

// paged converts the page of all that the request's size and offset select.
func paged[S any, T any](r *http.Request, all []S, conv func(S) T) answer {
	q := r.URL.Query()
	size, offset := defaultPageSize, 0
	if v := q.Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return answer{http.StatusBadRequest, errorBody{Error: fmt.Sprintf("size %q must be a whole number from 1 to %d", v, maxPageSize)}}
		}
		size = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return answer{http.StatusBadRequest, errorBody{Error: fmt.Sprintf("offset %q must be a whole number from 0", v)}}
		}
		offset = n
	}
	offset = min(offset, len(all))
	out := list[T]{Total: len(all), Items: []T{}}
	end := min(offset+size, len(all))
	for i := offset; i < end; i++ {
		out.Items = append(out.Items, conv(all[i]))
	}
	if end < len(all) {
		q.Set("offset", strconv.Itoa(end))
		next := (&url.URL{Scheme: scheme(r), Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}).String()
		out.Next = &next
	}
	return found(out)
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

var (
	listMeshTrafficPermissions = inMesh((*schema.Set).MeshTrafficPermissionsIn, toMeshTrafficPermission)
	getMeshTrafficPermission   = oneInMesh((*schema.Set).MeshTrafficPermission, toMeshTrafficPermission, "mesh traffic permission")
)
