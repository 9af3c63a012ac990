package agent

import (
	"context"
	"crypto/tls"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/clusterpb"
)

// agentMethods are what another agent (certificate role agent) may call:
// image transfers and Hello. Everything else is the coordinator's.
var agentMethods = map[string]bool{"Hello": true, "ImageStatus": true, "GetImage": true, "PutImage": true}

// MaxRecvMsg bounds one received message: a chunk and its header.
const MaxRecvMsg = MaxChunk + 64<<10

// NewServer returns a gRPC server of a over TLS configuration tc (from
// certs.ServerConfig: the handshake already refuses peers the CA did not
// sign), which further refuses any call but an image transfer from a peer
// whose certificate has the agent role.
//
// Further options (tests add interceptors after the authorization) come
// last.
func NewServer(a *Agent, tc *tls.Config, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tc)),
		grpc.MaxRecvMsgSize(MaxRecvMsg),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := authorize(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := authorize(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}, opts...)...)
	clusterpb.RegisterAgentServer(s, a)
	return s
}

// authorize checks the caller's certificate role against the method.
func authorize(ctx context.Context, method string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	role := certs.RoleOf(ti.State.VerifiedChains[0][0])
	name := method[strings.LastIndex(method, "/")+1:]
	switch {
	case role == certs.Coordinator:
		return nil
	case role == certs.Agent && agentMethods[name]:
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "%s: a peer of role %q may not call it", name, role)
}
