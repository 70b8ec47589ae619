// Command capstan-portforward serves the kubelet's /portForward endpoint for the local cluster's
// node agent, with the kubelet's own streaming code (k8s.io/cri-streaming): SPDY/3.1, WebSocket
// and the API server's WebSocket-tunnelled SPDY. The node agent (Python) terminates TLS, finds the
// pod and hands the request over a Unix socket with the pod's address in X-Capstan-Pod-IP; this
// dials that address, as the kubelet dials localhost inside the pod's network namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

const (
	idleTimeout           = 4 * time.Hour // the kubelet's default streaming-connection-idle-timeout
	streamCreationTimeout = 30 * time.Second
)

// podDialer forwards each port stream to one pod's address.
type podDialer struct{ ip string }

func (d podDialer) PortForward(ctx context.Context, _ string, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(d.ip, fmt.Sprint(port)))
	if err != nil {
		return fmt.Errorf("dial %s port %d: %w", d.ip, port, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, stream); done <- struct{}{} }()
	go func() { io.Copy(stream, conn); done <- struct{}{} }()
	<-done
	return nil
}

func serve(w http.ResponseWriter, req *http.Request) {
	// /portForward/<namespace>/<pod>[/<uid>]
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	ip := req.Header.Get("X-Capstan-Pod-IP")
	if len(parts) < 3 || parts[0] != "portForward" || ip == "" {
		http.Error(w, "expected /portForward/<namespace>/<pod> with X-Capstan-Pod-IP", http.StatusBadRequest)
		return
	}
	tunnel := wsstream.IsWebSocketRequestWithTunnelingProtocol(req)
	opts := &portforward.V4Options{}
	if !tunnel {
		var err error
		if opts, err = portforward.NewV4Options(req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		portforward.ServePortForward(w, r, podDialer{ip}, parts[2], "", opts, idleTimeout,
			streamCreationTimeout, portforward.SupportedProtocols)
	})
	if tunnel {
		// The API server tunnels SPDY inside a WebSocket; the kubelet unwraps it the same way.
		h = proxy.NewTunnelingHandler(h)
	}
	h.ServeHTTP(w, req)
}

func main() {
	socket := flag.String("socket", "", "Unix socket to serve on")
	flag.Parse()
	if *socket == "" {
		log.Fatal("--socket is required")
	}
	os.Remove(*socket)
	l, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(l, http.HandlerFunc(serve)))
}
