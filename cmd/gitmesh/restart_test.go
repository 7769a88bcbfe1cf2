package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/examples/bookinfo/app"
	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile"
)

// TestGRPCCallsSurviveRestarts runs a proxyless gRPC client (productpage)
// and server (details) on a daemon that is restarted twice: with SIGTERM
// while git is up, then with kill -9 while git is down. Every call the
// client makes through both restarts succeeds: the restarted daemon answers
// each node, from its first response on, in the flavour it runs, with the
// versions it already holds. Without mTLS the applications are the first
// to reconnect; with it, each has its certificate agent too.
func TestGRPCCallsSurviveRestarts(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("mtls=%v", mtls), func(t *testing.T) {
			t.Parallel()
			grpcCallsSurviveRestarts(t, mtls)
		})
	}
}

// productpageAndDetails are two of bookinfo's dataplanes, on free ports,
// and the policies of those two alone (mTLS on).
func productpageAndDetails(t *testing.T) ([]app.Dataplane, map[string]string) {
	t.Helper()
	var dataplanes []app.Dataplane
	ports := map[int]int{}
	for _, dp := range app.Dataplanes {
		if dp.Service == "productpage" || dp.Service == "details" {
			free := freePort(t)
			ports[dp.Port] = free
			dp.Port = free
			dataplanes = append(dataplanes, dp)
		}
	}
	files := bookinfoPolicies(t, ports)
	for name := range files {
		if strings.Contains(name, "reviews") || strings.Contains(name, "ratings") {
			delete(files, name)
		}
	}
	return dataplanes, files
}

func grpcCallsSurviveRestarts(t *testing.T, mtls bool) {
	dataplanes, files := productpageAndDetails(t)
	if !mtls {
		files["policies/meshes/bookinfo.yaml"] = "type: Mesh\nname: bookinfo\n"
	}
	r := newRemote(t)
	r.push(t, "productpage and details", files)
	stateDir := t.TempDir()
	xdsAddr, apiAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"serve", "--repo", r.url, "--path", "policies", "--state-dir", stateDir, "--interval", "500ms"}
	daemon := startProcessAt(t, xdsAddr, apiAddr, args...)
	waitHTTPStatus(t, apiAddr, func(st reconcile.Status) bool { return st.Ready })

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var detailsLog *logtest.Buffer
	for _, dp := range dataplanes {
		if logs := startDataplane(t, ctx, dp, xdsAddr, httpAddr, mtls); dp.Service == "details" {
			detailsLog = logs
		}
	}
	pollPage(t, httpAddr, "productpage reaching details", func(p *app.Reply) bool { return p.Calls[0].OK })
	inSync := func(what string) {
		t.Helper()
		defer func() {
			if t.Failed() {
				resp, err := http.Get("http://" + apiAddr + "/proxies")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					t.Logf("/proxies: %s", b)
				}
			}
		}()
		waitHTTPStatus(t, apiAddr, func(st reconcile.Status) bool {
			return st.Ready && st.Convergence.Connected == len(dataplanes) && st.Convergence.Acked == len(dataplanes)
		})
		t.Logf("%s: both nodes connected and in sync", what)
	}
	inSync("before the restarts")

	// Calls, from now on until the end, every 20ms.
	var calls, failed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		client := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var p app.Reply
			resp, err := client.Get("http://" + httpAddr + "/api/page")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&p)
				resp.Body.Close()
			}
			calls.Add(1)
			if err != nil || len(p.Calls) == 0 || !p.Calls[0].OK {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("%v %s", err, app.Summary(&p)))
			}
		}
	})
	settle := func() {
		for before := calls.Load(); calls.Load() < before+25; {
			time.Sleep(20 * time.Millisecond)
		}
	}
	settle()

	// A graceful restart with git up.
	daemon.stop(t)
	daemon = startProcessAt(t, xdsAddr, apiAddr, args...)
	inSync("after a restart with git up")
	settle()

	// kill -9, and git down: the daemon serves what it had from local
	// objects.
	if err := os.Rename(r.bare, r.bare+".gone"); err != nil {
		t.Fatal(err)
	}
	daemon.kill(t)
	startProcessAt(t, xdsAddr, apiAddr, args...)
	waitHTTPStatus(t, apiAddr, func(st reconcile.Status) bool { return st.Ready && st.LastError != "" })
	inSync("after kill -9 with git down")
	settle()

	close(stop)
	wg.Wait()
	t.Logf("%d calls through two restarts, %d failed", calls.Load(), failed.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d calls failed across the restarts; the first: %v", n, calls.Load(), firstFailure.Load())
	}
	// What the calls may miss in the moment it lasts: the server never left
	// SERVING (its listener was never removed), and no node rejected
	// anything the restarted daemon sent.
	if n := strings.Count(detailsLog.String(), "mode=NOT_SERVING"); n > 0 {
		t.Errorf("details stopped serving %d times:\n%s", n, detailsLog)
	}
	var proxies struct {
		Items []struct {
			NodeID string
			Types  []struct {
				Type     string
				LastNack *struct{ Version, Error string }
			}
		}
	}
	getJSON(t, "http://"+apiAddr+"/proxies", &proxies)
	for _, p := range proxies.Items {
		for _, typ := range p.Types {
			if typ.LastNack != nil {
				t.Errorf("%s NACKed %s %s: %s", p.NodeID, typ.Type, typ.LastNack.Version, typ.LastNack.Error)
			}
		}
	}
}
