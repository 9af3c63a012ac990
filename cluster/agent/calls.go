package agent

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnsnap/vnsnap/cluster/clusterpb"
)

// MaxRemembered is how many completed calls the agent remembers by request
// ID. A retry of a call older than that (thousands of calls later) would run
// again; the coordinator retries within seconds, and the epoch fence refuses
// calls of an epoch that has passed.
const MaxRemembered = 4096

// calls remembers the answers of completed mutating calls by request ID
// and fences calls of an older epoch: a retry (same request ID) gets the
// first answer and never acts again, and two copies of one call that
// arrive together run once.
type calls struct {
	mu    sync.Mutex
	epoch uint32 // the highest epoch seen
	// floor is the lowest epoch a new call may carry: one past the last
	// epoch whose lease ran out (that coordinator is taken for dead, so
	// nothing of its epoch may act any more, a late PauseVM least of all).
	floor uint64
	byID  map[string]*callEntry
	order []string // completed IDs, oldest first
}

type callEntry struct {
	method string
	done   chan struct{} // closed when the first run ended
	reply  proto.Message // nil if it failed (a retry runs again)
}

func newCalls() *calls { return &calls{byID: map[string]*callEntry{}} }

// Epoch returns the highest epoch seen.
func (c *calls) Epoch() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// fence ends epoch e, whose lease ran out: e counts as seen, and from now
// on a new call of epoch e or below is refused. A retry of a call that
// completed still gets its answer.
func (c *calls) fence(e uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch = max(c.epoch, e)
	c.floor = max(c.floor, uint64(e)+1)
}

// fenced reports whether epoch e has ended with its lease (fence).
func (c *calls) fenced(e uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return uint64(e) < c.floor
}

// do runs f once for call's request ID: a call already completed returns
// its first reply (whatever its epoch), one in progress is waited for, a
// failed one runs again. A call to run below the highest epoch seen, or at
// an epoch whose lease ran out (fence), is refused (FailedPrecondition), as
// is a request ID reused by another method.
func (c *calls) do(call *clusterpb.Call, method string, f func() (proto.Message, error)) (proto.Message, error) {
	if err := checkCall(call); err != nil {
		return nil, err
	}
	for {
		c.mu.Lock()
		// A retry is looked up before the epoch fence: it carries its first
		// attempt's Call, whose epoch later calls may have passed, and it
		// never acts again, so it gets its answer.
		e, ok := c.byID[call.RequestId]
		if ok && e.method != method {
			c.mu.Unlock()
			return nil, status.Errorf(codes.InvalidArgument, "%s: request_id %q was used by %s", method, call.RequestId, e.method)
		}
		if !ok && call.Epoch < c.epoch {
			c.mu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "%s: stale epoch %d: the agent has seen epoch %d", method, call.Epoch, c.epoch)
		}
		if !ok && uint64(call.Epoch) < c.floor {
			c.mu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "%s: epoch %d is over: its lease ran out (a new snapshot takes epoch %d or later)", method, call.Epoch, c.floor)
		}
		if ok {
			c.mu.Unlock()
			<-e.done
			if e.reply != nil {
				return e.reply, nil
			}
			continue // the first run failed and was forgotten: run again
		}
		c.epoch = call.Epoch
		e = &callEntry{method: method, done: make(chan struct{})}
		c.byID[call.RequestId] = e
		c.mu.Unlock()

		reply, err := f()
		c.mu.Lock()
		if err != nil {
			delete(c.byID, call.RequestId)
		} else {
			e.reply = reply
			c.order = append(c.order, call.RequestId)
			for len(c.order) > MaxRemembered {
				delete(c.byID, c.order[0])
				c.order = c.order[1:]
			}
		}
		close(e.done)
		c.mu.Unlock()
		return reply, err
	}
}
