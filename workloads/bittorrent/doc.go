// Package bittorrent holds the parameters and the pure logic of a
// BitTorrent-style swarm that the simulator drives: a file split in pieces
// (256 KiB by default), piece bitfields, rarest-first piece selection with
// ties broken by a seeded *rand.Rand the caller passes in, tit-for-tat
// choking (every 10 s, 4 regular unchoke slots by rate, plus one optimistic
// unchoke rotated every 30 s), and piece verification by a hash of
// (file id, piece index).
//
// A Peer is a deterministic state machine: the caller feeds it what the
// network delivered (Connect, PeerHas, SetChokedBy, SetInterested, Receive)
// and asks it what to do (NextRequest, Rechoke). Time is a time.Duration
// since the start of the run passed into Rechoke; nothing here reads the
// clock, starts a goroutine, or uses the global random source. Maps are only
// read through sorted keys.
//
// The parameters follow the BitTorrent protocol specification (BEP 3) and
// Cohen, "Incentives Build Robustness in BitTorrent" (2003): rarest first,
// rechoke every 10 s, four regular unchokes, optimistic unchoke rotated every
// 30 s. Simplifications: no end-game mode, no sub-piece blocks (a request is a
// whole piece), no snubbing, and the caller chooses which rate to rank a
// remote by (download rate from it while leeching, upload rate to it as a
// seed).
package bittorrent
