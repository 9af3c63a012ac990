package cluster

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/vnsnap/vnsnap/cluster/certs"
	"github.com/vnsnap/vnsnap/cluster/clusterpb"
)

// MaxMsg bounds one message a client receives (an image chunk and its
// header), as the agent bounds what it receives.
const MaxMsg = 2 << 20

// Dial connects to the agent of host at addr (host:port) over mutual TLS
// with identity id: the agent's certificate must be signed by id.CA, name
// host and carry the agent role. The connection is lazy: the handshake
// happens at the first call, which fails if the agent is refused (or
// refuses us).
func Dial(addr, host string, id certs.Identity) (*grpc.ClientConn, clusterpb.AgentClient, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(certs.ClientConfig(id, host))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsg)),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: dial agent %s at %s: %w", host, addr, err)
	}
	return cc, clusterpb.NewAgentClient(cc), nil
}
