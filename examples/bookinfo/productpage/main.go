// Command productpage is bookinfo's productpage service as a proxyless gRPC application: run
// it with GRPC_XDS_BOOTSTRAP from `gitmesh bootstrap --grpc`.
package main

import "github.com/gitmesh/gitmesh/examples/bookinfo/app"

func main() { app.Main("productpage", app.Services["productpage"]) }
