// Command goserver is the Go peer `make bench` measures agentrouter-auth against: the same
// proto served the way connect-go users serve it, answering one prebuilt GetJWKSResponse.
//
//	goserver -mode connect -addr 127.0.0.1:PORT -message jwks.binpb
//	goserver -mode bare    -addr 127.0.0.1:PORT -json jwks.json
//
// connect: a connect-go handler behind a vanguard-go transcoder, so one port serves REST
// (GET /.well-known/jwks.json from the proto's google.api.http rule), Connect GET and POST
// (JSON and proto), gRPC-Web and gRPC, over HTTP/1.1 and h2c (http.Server with unencrypted
// HTTP/2). The message is read from the protobuf bytes agentrouter-auth published, so both
// servers answer the same message with the same protobuf bytes.
//
// bare: net/http answering the stored JSON bytes on GET /.well-known/jwks.json only: what Go
// itself costs, with no RPC framework.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1"
)

const (
	service     = "agentrouter.auth.v1.AuthService"
	getJWKSPath = "/" + service + "/GetJWKS"
	jwksPath    = "/.well-known/jwks.json"
)

func main() {
	mode := flag.String("mode", "connect", "connect (connect-go + vanguard-go) or bare (net/http)")
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	messageFile := flag.String("message", "", "connect: the GetJWKSResponse in protobuf bytes")
	jsonFile := flag.String("json", "", "bare: the JSON body to answer")
	flag.Parse()

	var handler http.Handler
	var err error
	switch *mode {
	case "connect":
		handler, err = connectHandler(*messageFile)
	case "bare":
		handler, err = bareHandler(*jsonFile)
	default:
		err = errors.New("unknown -mode " + strconv.Quote(*mode))
	}
	if err != nil {
		log.Fatal(err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	server := &http.Server{
		Addr:              *addr,
		Handler:           handler,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	}()
	if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// connectHandler serves GetJWKS with connect-go's default codecs behind vanguard-go.
func connectHandler(messageFile string) (http.Handler, error) {
	raw, err := os.ReadFile(messageFile)
	if err != nil {
		return nil, err
	}
	message := &authv1.GetJWKSResponse{}
	if err := proto.Unmarshal(raw, message); err != nil {
		return nil, err
	}
	method := authv1.File_agentrouter_auth_v1_auth_proto.Services().ByName("AuthService").Methods().ByName("GetJWKS")
	getJWKS := connect.NewUnaryHandler(
		getJWKSPath,
		func(context.Context, *connect.Request[authv1.GetJWKSRequest]) (*connect.Response[authv1.GetJWKSResponse], error) {
			return connect.NewResponse(message), nil
		},
		connect.WithSchema(method),
		connect.WithIdempotency(connect.IdempotencyNoSideEffects),
	)
	mux := http.NewServeMux()
	mux.Handle(getJWKSPath, getJWKS)
	return vanguard.NewTranscoder([]*vanguard.Service{vanguard.NewService(service, mux)})
}

// bareHandler answers the stored JSON bytes on the JWKS path.
func bareHandler(jsonFile string) (http.Handler, error) {
	body, err := os.ReadFile(jsonFile)
	if err != nil {
		return nil, err
	}
	length := []string{strconv.Itoa(len(body))}
	contentType := []string{"application/json"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+jwksPath, func(w http.ResponseWriter, _ *http.Request) {
		header := w.Header()
		header["Content-Type"] = contentType
		header["Content-Length"] = length
		_, _ = w.Write(body)
	})
	return mux, nil
}
