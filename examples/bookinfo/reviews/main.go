// Command reviews is bookinfo's reviews service as a proxyless gRPC application: run
// it with GRPC_XDS_BOOTSTRAP from `gitmesh bootstrap --grpc`.
package main

import "github.com/gitmesh/gitmesh/examples/bookinfo/app"

func main() { app.Main("reviews", app.Services["reviews"]) }
