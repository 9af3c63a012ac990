// Package cut checks that a VNE snapshot is a consistent cut.
//
// It reads a trace of Records in the order they happened: every frame sent,
// delivered to a VM, dropped or logged, and each VM's snapshot point (a Cut
// record). An event of a VM is "in the image" when it happened before that
// VM's Cut. The Checker classifies every frame whose send or receipt is in an
// image:
//
//   - orphan: its receipt is in the receiver's image but its sending is not in
//     the sender's. A consistent snapshot has none.
//   - in transit: its sending is in the sender's image but its receipt is not
//     in the receiver's (delivered after the receiver's cut, dropped after it,
//     or never delivered). Of those:
//   - replayed: the switch logged it as channel state (vnsnap-log);
//   - recovered by TCP: a TCP segment whose data the sender's image still holds
//     as unacknowledged (so a restored sender retransmits it), or a pure ACK
//     (cumulative ACKs are regenerated);
//   - lost: everything else (UDP, or TCP data the sender's image believes was
//     acknowledged: only possible with orphans).
//
// The checker is independent of the switch's colour logic: it uses only the
// Cut records and the order of events, so it also judges algorithms that do
// not colour frames. It works online (Observe one record at a time) so traces
// of long simulations need not be stored.
package cut
