// Command faultproxy stands between the operator under test and the real kube-apiserver and
// injects HTTP-level faults at rates that can be changed while it runs.
//
//	faultproxy -upstream https://127.0.0.1:PORT -ca ca.crt -cert admin.crt -key admin.key [-seed N]
//
// It prints one JSON line on stdout once both listeners are bound:
//
//	{"proxy":"http://127.0.0.1:P1","control":"http://127.0.0.1:P2"}
//
// The proxy listener speaks plain HTTP on the loopback interface; the operator's kubeconfig
// points at it and carries no credentials. The proxy authenticates upstream with the client
// certificate it was given (the cluster's admin certificate): the operator must reach the API
// server only through the proxy, and a client certificate cannot be passed through an HTTP
// proxy, whereas RBAC is not what the fault harness tests (the e2e suite does).
//
// The control listener:
//
//	GET /faults   the fault rates in force (JSON, see Faults)
//	PUT /faults   replace them (a JSON Faults object; missing fields are zero, i.e. off)
//	GET /stats    requests seen per verb and faults injected per kind, since start
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Faults are the injection rates. Each rate is a probability per request of the verbs listed in
// Verbs (watch cuts: per watch).
type Faults struct {
	// Verbs the request faults apply to: get, list, watch, create, update, patch, delete.
	Verbs []string `json:"verbs"`
	// ErrorRate answers with one of ErrorCodes (429, 500 or 503) without forwarding.
	ErrorRate  float64 `json:"error_rate"`
	ErrorCodes []int   `json:"error_codes"`
	// WatchCutRate aborts a watch stream after a uniformly random time up to WatchCutMaxSeconds.
	WatchCutRate       float64 `json:"watch_cut_rate"`
	WatchCutMaxSeconds float64 `json:"watch_cut_max_seconds"`
	// StallRate holds the request for StallSeconds, then answers 504 without forwarding.
	StallRate    float64 `json:"stall_rate"`
	StallSeconds float64 `json:"stall_seconds"`
	// SlowRate delays the request by up to SlowMaxSeconds, then forwards it.
	SlowRate       float64 `json:"slow_rate"`
	SlowMaxSeconds float64 `json:"slow_max_seconds"`
	// ResetRate closes the client's connection without an answer: half of them before the
	// request is forwarded, half after the API server has acted on it (the client cannot tell
	// which, as with a real network failure).
	ResetRate float64 `json:"reset_rate"`
}

func (f *Faults) validate() error {
	for _, rate := range []float64{f.ErrorRate, f.WatchCutRate, f.StallRate, f.SlowRate, f.ResetRate} {
		if rate < 0 || rate > 1 {
			return fmt.Errorf("rates are probabilities in [0, 1], got %v", rate)
		}
	}
	for _, code := range f.ErrorCodes {
		if code != http.StatusTooManyRequests && code != http.StatusInternalServerError && code != http.StatusServiceUnavailable {
			return fmt.Errorf("error code %d: only 429, 500 and 503 are injected", code)
		}
	}
	if f.ErrorRate > 0 && len(f.ErrorCodes) == 0 {
		return errors.New("error_rate needs error_codes")
	}
	return nil
}

type injector struct {
	mu       sync.Mutex
	faults   Faults
	random   *rand.Rand
	requests map[string]int64
	injected map[string]int64
}

func (in *injector) count(table map[string]int64, key string) {
	in.mu.Lock()
	table[key]++
	in.mu.Unlock()
}

// decision is what happens to one request, drawn when it arrives.
type decision struct {
	errorCode   int
	stall       time.Duration
	slow        time.Duration
	resetBefore bool
	resetAfter  bool
	watchCut    time.Duration
}

func (in *injector) decide(verb string) decision {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.requests[verb]++
	f := in.faults
	var d decision
	if verb == "watch" && f.WatchCutRate > 0 && in.random.Float64() < f.WatchCutRate {
		d.watchCut = time.Duration(in.random.Float64() * f.WatchCutMaxSeconds * float64(time.Second))
	}
	if !slices.Contains(f.Verbs, verb) {
		return d
	}
	switch {
	case in.random.Float64() < f.ResetRate:
		// A watch has no effect upstream to lose, so it is always reset before forwarding.
		if verb != "watch" && in.random.IntN(2) == 0 {
			d.resetAfter = true
		} else {
			d.resetBefore = true
		}
	case in.random.Float64() < f.ErrorRate:
		d.errorCode = f.ErrorCodes[in.random.IntN(len(f.ErrorCodes))]
	case in.random.Float64() < f.StallRate:
		d.stall = time.Duration(f.StallSeconds * float64(time.Second))
	case in.random.Float64() < f.SlowRate:
		d.slow = time.Duration(in.random.Float64() * f.SlowMaxSeconds * float64(time.Second))
	}
	return d
}

// verbOf names a Kubernetes API request the way RBAC does.
func verbOf(r *http.Request) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if w := r.URL.Query().Get("watch"); w == "1" || w == "true" {
			return "watch"
		}
		if isCollection(r.URL.Path) {
			return "list"
		}
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return strings.ToLower(r.Method)
}

// isCollection tells /api/v1/namespaces/NS/configmaps (a list) from
// /api/v1/namespaces/NS/configmaps/NAME (a get).
func isCollection(path string) bool {
	segments := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(segments) >= 2 && segments[0] == "api":
		segments = segments[2:]
	case len(segments) >= 3 && segments[0] == "apis":
		segments = segments[3:]
	default:
		return false
	}
	if len(segments) >= 3 && segments[0] == "namespaces" {
		segments = segments[2:]
	}
	return len(segments) == 1
}

type resetAfterKey struct{}

var errResetAfter = errors.New("connection reset injected after the upstream answered")

func (in *injector) serveProxy(proxy *httputil.ReverseProxy) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		verb := verbOf(r)
		d := in.decide(verb)
		// The proxy's certificate is the operator's identity upstream.
		r.Header.Del("Authorization")
		switch {
		case d.resetBefore:
			in.count(in.injected, "reset_before_forward")
			resetConnection(w)
			return
		case d.errorCode != 0:
			in.count(in.injected, fmt.Sprintf("http_%d", d.errorCode))
			writeStatus(w, d.errorCode, "injected by faultproxy")
			return
		case d.stall > 0:
			in.count(in.injected, "stall")
			select {
			case <-time.After(d.stall):
			case <-r.Context().Done():
			}
			writeStatus(w, http.StatusGatewayTimeout, "stalled by faultproxy")
			return
		case d.slow > 0:
			in.count(in.injected, "slow")
			select {
			case <-time.After(d.slow):
			case <-r.Context().Done():
				return
			}
		case d.resetAfter:
			r = r.WithContext(context.WithValue(r.Context(), resetAfterKey{}, true))
		}
		if d.watchCut > 0 {
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			cut := time.AfterFunc(d.watchCut, func() {
				in.count(in.injected, "watch_cut")
				cancel()
			})
			defer cut.Stop()
			r = r.WithContext(ctx)
		}
		proxy.ServeHTTP(w, r)
	}
}

func resetConnection(w http.ResponseWriter) {
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hijacker.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		// Linger 0 sends RST instead of FIN: the client sees "connection reset by peer".
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

var reasons = map[int]string{
	http.StatusTooManyRequests:     "TooManyRequests",
	http.StatusInternalServerError: "InternalError",
	http.StatusServiceUnavailable:  "ServiceUnavailable",
	http.StatusBadGateway:          "InternalError",
	http.StatusGatewayTimeout:      "Timeout",
}

// writeStatus answers with a metav1.Status, as the API server does, so clients parse it.
func writeStatus(w http.ResponseWriter, code int, message string) {
	w.Header().Set("Content-Type", "application/json")
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": message, "reason": reasons[code], "code": code,
	})
}

func (in *injector) serveControl(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/faults" && r.Method == http.MethodGet:
		in.mu.Lock()
		faults := in.faults
		in.mu.Unlock()
		writeJSON(w, faults)
	case r.URL.Path == "/faults" && r.Method == http.MethodPut:
		var faults Faults
		decoder := json.NewDecoder(r.Body)
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(&faults); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := faults.validate(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		in.mu.Lock()
		in.faults = faults
		in.mu.Unlock()
		writeJSON(w, faults)
	case r.URL.Path == "/stats" && r.Method == http.MethodGet:
		in.mu.Lock()
		stats := map[string]map[string]int64{"requests": clone(in.requests), "injected": clone(in.injected)}
		in.mu.Unlock()
		writeJSON(w, stats)
	default:
		http.NotFound(w, r)
	}
}

func clone(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func writeJSON(w http.ResponseWriter, value any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(value)
}

func upstreamTransport(caFile, certFile, keyFile string) (*http.Transport, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}
	// HTTP/1.1 upstream gives every watch its own connection, so cutting one never
	// disturbs another request.
	transport.ForceAttemptHTTP2 = false
	transport.MaxIdleConnsPerHost = 64
	return transport, nil
}

func listen(address string) (net.Listener, string) {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		log.Fatalf("listening on %s: %v", address, err)
	}
	return listener, "http://" + listener.Addr().String()
}

func main() {
	listenAddress := flag.String("listen", "127.0.0.1:0", "address of the proxy")
	controlAddress := flag.String("control", "127.0.0.1:0", "address of the control endpoint")
	upstream := flag.String("upstream", "", "URL of the kube-apiserver")
	caFile := flag.String("ca", "", "CA certificate of the kube-apiserver (PEM)")
	certFile := flag.String("cert", "", "client certificate to authenticate upstream with (PEM)")
	keyFile := flag.String("key", "", "its private key (PEM)")
	seed := flag.Uint64("seed", 1, "seed of the fault decisions (timing still varies between runs)")
	flag.Parse()
	log.SetPrefix("[faultproxy] ")

	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		log.Fatalf("-upstream must be a URL, got %q", *upstream)
	}
	transport, err := upstreamTransport(*caFile, *certFile, *keyFile)
	if err != nil {
		log.Fatalf("upstream credentials: %v", err)
	}
	in := &injector{
		random:   rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15)),
		requests: map[string]int64{},
		injected: map[string]int64{},
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
		},
		Transport: transport,
		// Flush every write at once: watch events must not wait in a buffer.
		FlushInterval: -1,
		ModifyResponse: func(response *http.Response) error {
			if response.Request.Context().Value(resetAfterKey{}) != nil {
				return errResetAfter
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, errResetAfter) {
				in.count(in.injected, "reset_after_forward")
				resetConnection(w)
				return
			}
			// The API server is down (killed by the harness) or the request was cut.
			writeStatus(w, http.StatusBadGateway, "faultproxy: upstream: "+err.Error())
		},
		ErrorLog: log.New(os.Stderr, "[faultproxy] ", log.LstdFlags),
	}

	proxyListener, proxyURL := listen(*listenAddress)
	controlListener, controlURL := listen(*controlAddress)
	announcement, _ := json.Marshal(map[string]string{"proxy": proxyURL, "control": controlURL})
	fmt.Println(string(announcement))

	go func() {
		log.Fatal(http.Serve(controlListener, http.HandlerFunc(in.serveControl)))
	}()
	log.Fatal(http.Serve(proxyListener, in.serveProxy(proxy)))
}
