package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/rs/cors"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1connect "github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
	"github.com/actionsync/actionsync/internal/batchread"
	"github.com/actionsync/actionsync/metrics"
	"github.com/actionsync/actionsync/service"
	"github.com/actionsync/actionsync/web/demo"
)

// HTTP server limits. There is deliberately no ReadTimeout or WriteTimeout: they would
// cut Subscribe and Sync streams, which live for hours.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	auxReadMaxBytes   = 1 << 20 // reflection and health requests
	corsMaxAge        = 2 * time.Hour
)

// serve runs the server described by cfg, logging to logOut, until ctx is done; then it
// shuts down gracefully (see server.shutdown) and returns nil, or what went wrong.
func serve(ctx context.Context, cfg config, logOut io.Writer) error {
	s, err := listen(ctx, cfg, newLogger(cfg, logOut))
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return s.shutdown(cfg.shutdownTimeout)
	case err := <-s.serveErr:
		return s.abort(fmt.Errorf("serve: %w", err))
	}
}

// server is a running actionsync server.
type server struct {
	log             *slog.Logger
	broker          broker.Broker
	closeBroker     func() error // closes the broker, then what it runs on
	svc             *service.Service
	health          *health
	adminConfig     service.AdminConfig // what the AdminService reports and requires
	http            *http.Server
	endAux          context.CancelFunc // ends reflection and health streams
	listenersClosed chan struct{}      // closed once http.Server.Shutdown has closed them
	serveErr        chan error         // what http.Server.Serve returned
	sides           []*sideListener    // --debug-addr, --admin-addr: closed at shutdown
	stopKeys        chan struct{}      // closed at shutdown: stops watchKeys
	keysDone        chan struct{}      // closed when watchKeys has returned
}

// listen builds the broker, the service and the HTTP server for cfg, starts listening
// on cfg.addr and serving, and logs the start-up line with the actual address. ctx
// bounds the start-up only.
func listen(ctx context.Context, cfg config, logger *slog.Logger) (*server, error) {
	// Health exists before the broker, which reports its connection to it from the start.
	health := newHealth()
	b, closeBroker, err := newBroker(ctx, cfg, logger, health.setAvailable)
	if err != nil {
		return nil, err
	}
	opts := cfg.service
	opts.Logger = logger
	if cfg.metricsAddr != "" {
		opts.Metrics = metrics.New(b)
	}
	if closeBroker, err = sharePresence(b, &opts, closeBroker); err != nil {
		return nil, errors.Join(err, closeBroker())
	}
	svc, err := service.New(b, opts)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("create service: %w", err), closeBroker())
	}
	// Listen first, so that port 0 works and the log shows the real address.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen: %w", err), closeBroker())
	}

	// auxCtx ends the streams of reflection and health Watch at shutdown: unlike the
	// service's streams, nothing else would end them, and http.Server.Shutdown waits.
	auxCtx, endAux := context.WithCancel(context.Background())
	s := &server{
		adminConfig: service.AdminConfig{
			Version: resolvedVersion(),
			Broker:  brokerName(cfg.backend),
			Started: processStart,
			Healthy: health.serving,
			Token:   cfg.adminToken,
		},
		log:             logger,
		broker:          b,
		closeBroker:     closeBroker,
		svc:             svc,
		health:          health,
		endAux:          endAux,
		listenersClosed: make(chan struct{}),
		serveErr:        make(chan error, 1),
	}
	var demoToken http.Handler
	if cfg.auth.demoAuth {
		demoToken = demoTokenHandler(cfg.auth.secret, cfg.auth.verifier, time.Now)
		logger.Warn("auth: --demo-auth hands a token to anyone who asks at " + demoTokenPath + ": development only")
	}
	s.http = newHTTPServer(newHandler(svc, health, auxCtx, cfg.corsOrigins, cfg.demo, demoToken), cfg, logger)
	// Shutdown runs this once it has closed the listeners.
	s.http.RegisterOnShutdown(func() { close(s.listenersClosed) })
	// Read before Serve, which sets TLSConfig for h2c too.
	useTLS := s.http.TLSConfig != nil
	go func() {
		if useTLS {
			s.serveErr <- s.http.ServeTLS(ln, "", "")
		} else {
			// h2c reads every frame with two unbuffered reads: batch them (batchread).
			s.serveErr <- s.http.Serve(batchread.Listener(ln))
		}
	}()
	for _, side := range []struct {
		addr   string
		listen func(string) error
	}{{cfg.debugAddr, s.listenDebug}, {cfg.adminAddr, s.listenAdmin}, {cfg.metricsAddr, func(addr string) error {
		_, err := s.listenSide("metrics-addr", "metrics", addr, "/metrics", metricsMux(opts.Metrics))
		return err
	}}} {
		if side.addr == "" {
			continue
		}
		if err := side.listen(side.addr); err != nil {
			return nil, s.abort(err)
		}
	}
	s.stopKeys, s.keysDone = make(chan struct{}), make(chan struct{})
	if v := cfg.auth.verifier; v != nil && cfg.auth.keysFile != "" {
		go func() {
			defer close(s.keysDone)
			watchKeys(v, logger, s.stopKeys)
		}()
	} else {
		close(s.keysDone)
	}
	switch {
	case cfg.auth.verifier != nil:
		logger.Info("auth: bearer tokens required", "hs256", cfg.auth.secretFile != "", "keys_file", cfg.auth.keysFile,
			"audience", cfg.auth.audience, "issuer", cfg.auth.issuer)
	case cfg.auth.allowAnonymous:
		logger.Warn("auth: anonymous access, on any address (--allow-anonymous): anyone who can reach the server may read and write every channel")
	default:
		logger.Info("auth: anonymous access, allowed because the server listens on loopback only")
	}
	logger.Info("actionsync listening",
		"addr", ln.Addr().String(),
		"url", serverURL(ln.Addr(), useTLS),
		"version", resolvedVersion(),
		"broker", string(cfg.backend),
		"tls", useTLS,
		"cors_origins", cfg.corsOrigins,
		"demo", cfg.demo,
		"allow_rules", len(cfg.service.AllowList.Rules()))
	return s, nil
}

// shutdown stops the server gracefully within timeout: health turns NOT_SERVING,
// dispatches stop (UNAVAILABLE) and those under way finish, the listeners close,
// Subscribe and Sync streams send what is queued and end with Unavailable (clients
// reconnect elsewhere and resume; connections still stuck after half the timeout are
// closed), in-flight unary calls finish, and the broker closes last (then
// its NATS connection and embedded NATS server, if any), so no acknowledged action is
// lost. It returns an error if anything was cut short.
func (s *server) shutdown(timeout time.Duration) error {
	s.log.Info("actionsync shutting down", "timeout", timeout.String())
	s.health.stop()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// http.Server.Shutdown closes the listeners, sends HTTP/2 GOAWAY, then waits for
	// every request to finish, streams included. Streams are told to reconnect only
	// once this server accepts no new connection, so they cannot come back here.
	//
	// Dispatches stop first: from here on they get UNAVAILABLE, so no action is
	// acknowledged after the streams that would carry it ended.
	var errs []error
	if err := s.svc.StopDispatches(ctx); err != nil {
		errs = append(errs, fmt.Errorf("finish dispatches: %w", err))
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Shutdown(ctx) }()
	select {
	case <-s.listenersClosed:
	case <-ctx.Done():
	}
	// Streams send what is queued for them and end. One whose client stopped reading
	// (a stopped process, a full socket) cannot: after half the timeout, the connections
	// are closed, which fails its writes, so a frozen client cannot hold the shutdown.
	streamsCtx, cancelStreams := context.WithTimeout(ctx, timeout/2)
	err := s.svc.Shutdown(streamsCtx)
	cancelStreams()
	forced := false
	if err != nil && ctx.Err() == nil {
		s.log.Warn("streams still writing to clients that stopped reading: closing their connections", "after", (timeout / 2).String())
		forced = true
		if err := s.http.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close http: %w", err))
		}
		err = s.svc.Shutdown(ctx)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("end streams: %w", err))
	}
	s.endAux()
	if err := <-httpDone; err != nil && !(forced && errors.Is(err, http.ErrServerClosed)) {
		errs = append(errs, fmt.Errorf("drain http: %w", err))
		if err := s.http.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close http: %w", err))
		}
	}
	if err := <-s.serveErr; !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("serve: %w", err))
	}
	for _, side := range s.sides {
		if err := side.close(); err != nil {
			errs = append(errs, err)
		}
	}
	close(s.stopKeys)
	<-s.keysDone
	// The broker closes last: every dispatch acknowledged above is already in it. An
	// embedded NATS server shuts down after it, flushing its file store.
	if err := s.closeBroker(); err != nil {
		errs = append(errs, fmt.Errorf("close broker: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error("actionsync shutdown incomplete", "error", err)
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("actionsync stopped")
	return nil
}

// processStart is when the process started, as GetStats reports it.
var processStart = time.Now()

// brokerName is how GetStats names the backend.
func brokerName(b backend) string {
	switch b {
	case backendNATS:
		return "jetstream"
	case backendEmbedded:
		return "jetstream (--data-dir)"
	}
	return "memory"
}

// health is the server's gRPC health: SERVING while the broker reaches its storage,
// NOT_SERVING while it does not, and NOT_SERVING for good once shutdown has begun.
type health struct {
	checker *grpchealth.StaticChecker

	mu       sync.Mutex
	stopping bool
	ok       bool // the status set last
}

// serving reports whether the server is SERVING.
func (h *health) serving() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok
}

func newHealth() *health {
	return &health{checker: grpchealth.NewStaticChecker(actionsyncv1connect.SyncServiceName), ok: true}
}

// setAvailable follows the broker's connection to its storage. It is called from the
// broker's goroutine, possibly as shutdown begins: the lock orders the two, so a late
// "back" never turns a stopping server SERVING again.
func (h *health) setAvailable(available bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping {
		return
	}
	h.set(available)
}

// stop turns NOT_SERVING for the rest of the process.
func (h *health) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopping = true
	h.set(false)
}

// set sets the status of the server ("") and of the SyncService.
func (h *health) set(serving bool) {
	status := grpchealth.StatusNotServing
	if serving {
		status = grpchealth.StatusServing
	}
	h.ok = serving
	h.checker.SetStatus("", status)
	h.checker.SetStatus(actionsyncv1connect.SyncServiceName, status)
}

// abort stops everything at once after Serve failed with err.
func (s *server) abort(err error) error {
	s.endAux()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if s.stopKeys != nil {
		close(s.stopKeys)
		<-s.keysDone
	}
	errs := []error{err, s.http.Close(), s.svc.Shutdown(ctx), s.closeBroker()}
	for _, side := range s.sides {
		errs = append(errs, side.close())
	}
	return errors.Join(errs...)
}

// newHandler routes the SyncService, gRPC reflection (v1 and v1alpha), gRPC health and,
// with withDemo, the demo page at "/" (every other path, so the RPC paths stay more
// specific), behind CORS when origins are configured. Reflection and health streams
// end when auxCtx does.
func newHandler(svc *service.Service, health *health, auxCtx context.Context, origins []string, withDemo bool, demoToken http.Handler) http.Handler {
	endWithAux := func(path string, h http.Handler) (string, http.Handler) {
		return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			defer context.AfterFunc(auxCtx, func() {
				cancel() // ends health Watch
				// A bidi handler (reflection) blocked reading the next request does not
				// watch its context; closing the body unblocks it. Safe concurrently with
				// Read on HTTP/2 only, and bidi needs HTTP/2 anyway.
				if r.ProtoMajor >= 2 {
					_ = r.Body.Close()
				}
			})()
			h.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	readMax := connect.WithReadMaxBytes(auxReadMaxBytes)
	reflector := grpcreflect.NewStaticReflector(actionsyncv1connect.SyncServiceName, grpchealth.HealthV1ServiceName)

	mux := http.NewServeMux()
	mux.Handle(svc.Handler())
	mux.Handle(endWithAux(grpcreflect.NewHandlerV1(reflector, readMax)))
	mux.Handle(endWithAux(grpcreflect.NewHandlerV1Alpha(reflector, readMax)))
	mux.Handle(endWithAux(grpchealth.NewHandler(health.checker, readMax)))
	// Probes over plain HTTP for container platforms: live while the process serves HTTP,
	// ready while it is SERVING (the broker reaches its storage, no shutdown under way).
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !health.serving() {
			http.Error(w, "not serving: the broker cannot reach its storage, or the server is shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	if withDemo {
		mux.Handle("/", demo.Handler())
	}
	if demoToken != nil {
		mux.Handle(demoTokenPath, demoToken)
	}
	if len(origins) == 0 {
		return mux
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: connectcors.AllowedMethods(),
		// Authorization: the bearer token; Retry-After: a rate-limited dispatch's hint.
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		ExposedHeaders: append(connectcors.ExposedHeaders(), "Retry-After"),
		MaxAge:         int(corsMaxAge / time.Second),
	}).Handler(mux)
}

// newHTTPServer returns the HTTP server for handler: HTTP/1.1 and h2c without TLS,
// HTTP/1.1 and HTTP/2 with it.
func newHTTPServer(handler http.Handler, cfg config, logger *slog.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	resets := &resetBudget{max: cfg.conn.maxResets, log: logger}
	var watch *writeWatch
	if cfg.conn.writeTimeout > 0 {
		watch = newWriteWatch(cfg.conn.writeTimeout)
	}
	// Idle connections are closed by idleCloser, not by IdleTimeout: see its doc (left
	// 0, IdleTimeout would default to ReadTimeout, also 0 here: no idle timer of
	// net/http's own).
	idle := newIdleCloser(idleTimeout)
	srv := &http.Server{
		Handler:           resets.wrap(withDeadlines(handler, cfg.conn.readTimeout, watch)),
		ConnContext:       resets.connContext,
		ConnState:         idle.connState,
		Protocols:         &protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          newServerErrorLog(logger),
		// Explicit rather than net/http's default (also 250), so it is documented and
		// configurable: how many requests (streams included) one HTTP/2 connection may
		// have open at once; the client waits for one to end before it can open more.
		// A client that stops answering pings (a stopped process, a dead network) is
		// closed, which frees its streams.
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: cfg.conn.maxStreams,
			SendPingTimeout:      cfg.conn.keepalive,
			PingTimeout:          cfg.conn.keepaliveTimeout,
		},
	}
	if watch != nil {
		// Shutdown closes stuck connections itself (server.shutdown).
		srv.RegisterOnShutdown(watch.stop)
	}
	if cfg.tlsCert != nil {
		protocols.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{*cfg.tlsCert},
			MinVersion:   tls.VersionTLS12,
		}
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	return srv
}

// newLogger returns the structured logger on w that cfg asks for.
func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serverURL is the base URL clients use for addr; an unspecified host (":8080",
// "0.0.0.0:8080") becomes localhost.
func serverURL(addr net.Addr, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	host := addr.String()
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		host = net.JoinHostPort("localhost", fmt.Sprint(tcp.Port))
	}
	return scheme + "://" + host
}

// sideListener is a listener of its own beside the API's (--debug-addr, --admin-addr),
// so that what it serves is never exposed with the API.
type sideListener struct {
	name string
	srv  *http.Server
	err  chan error // what Serve returned
}

// listenSide serves handler on addr (from --flag), over HTTP/1.1 and h2c, and logs
// "actionsync <what> listener" with the URL of path.
func (s *server) listenSide(flag, what, addr, path string, handler http.Handler) (*sideListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --%s: %w", flag, err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	side := &sideListener{
		name: flag,
		srv:  &http.Server{Handler: handler, ReadHeaderTimeout: readHeaderTimeout, Protocols: &p},
		err:  make(chan error, 1),
	}
	go func() { side.err <- side.srv.Serve(ln) }()
	s.sides = append(s.sides, side)
	s.log.Info("actionsync "+what+" listener", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String()+path)
	return side, nil
}

// close closes the listener and its connections and returns what went wrong.
func (side *sideListener) close() error {
	err := side.srv.Close()
	if serveErr := <-side.err; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	if err != nil {
		return fmt.Errorf("close --%s listener: %w", side.name, err)
	}
	return nil
}

// metricsMux serves m on /metrics.
func metricsMux(m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	return mux
}

// listenDebug serves Go's pprof profiles on addr. GET /debug/pprof/heap?gc=1 also forces
// a collection, which the benchmarks use before reading the server's memory.
func (s *server) listenDebug(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	_, err := s.listenSide("debug-addr", "debug", addr, "/debug/pprof/", mux)
	return err
}

// listenAdmin serves the AdminService (deleting a bad snapshot, stats, ...) on addr; its
// only access check is --admin-token-file: keep addr private.
func (s *server) listenAdmin(addr string) error {
	mux := http.NewServeMux()
	mux.Handle(s.svc.Admin(s.adminConfig).Handler())
	// Reflection, so that buf curl and grpcurl need no schema. Its streams are short.
	reflector := grpcreflect.NewStaticReflector(actionsyncv1connect.AdminServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	_, err := s.listenSide("admin-addr", "admin", addr, "", mux)
	return err
}
