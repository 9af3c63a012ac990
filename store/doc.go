// Package store keeps VNE snapshot images: for every VM a set of named byte
// streams ("memory", "disk", "config", ...), plus per-snapshot extras such as
// the frame log, cut into content-defined chunks that are deduplicated across
// VMs and snapshots, compressed and checksummed.
//
// # On-disk layout
//
//	<root>/lock                          flock(2) target: writers and readers shared, GC exclusive
//	<root>/chunks/ab/abcdef...           one chunk file, named by the hex SHA-256 of its content
//	<root>/chunks/ab/.tmp-*              chunk being written (removed by GC if a writer crashed)
//	<root>/snapshots/<name>/manifest.json the snapshot's manifest, written last
//	<root>/snapshots/.tmp-deleted-*      a snapshot being deleted
//
// A chunk file is "VNC1", the CRC-32C (Castagnoli, big-endian) of the rest,
// and one zstd frame (with zstd's content checksum) of the chunk. Streams are
// cut with a Rabin fingerprint over a 64-byte window (restic's chunker, fixed
// polynomial 0x3DA3358B4DC173), chunks 256 KiB to 4 MiB, about 1.25 MiB on
// average for high-entropy data, so the same content always yields the same
// chunks, and a change to a few pages of a stream invalidates only the one or
// two chunks around it. The Rabin fingerprint of a window of zeros is zero, a
// cut point, so data with frequent zero runs (zero pages) is cut near the
// 256 KiB minimum: finer deduplication for more chunk files.
//
// The manifest (schema version SchemaVersion) is indented JSON: name,
// creation time, algorithm, epoch, free-form labels, chunking parameters, per
// VM its streams, the extras, and for each stream its length, SHA-256 and
// ordered chunk list (address, size, stored size). Its "checksum" field is the
// SHA-256 of the canonical encoding of the manifest with the field empty, and
// the file must be exactly that canonical encoding, so that any change to any
// byte of it is detected.
//
// # Guarantees
//
//   - A snapshot is complete and verifiable or absent. Chunk files are
//     written under a temporary name, fsynced and hard-linked into place, so
//     a chunk file is whole or absent and never replaced; Commit fsyncs the
//     chunk directories and then writes the manifest through a temporary file,
//     fsync, rename and fsync of the directory. A directory without a manifest
//     is not a snapshot: Open reports ErrNotFound and List skips it.
//   - A failed or aborted write leaves no manifest: Abort, or a failed
//     Commit, removes the snapshot directory. Chunk files it added stay in the
//     shared pool, since a concurrent writer may already rely on them; GC
//     removes the ones no manifest references.
//   - Every byte read is verified: a chunk's CRC, zstd decoding, size and
//     SHA-256 before its bytes are returned, the stream's length and SHA-256
//     before io.EOF. Failures are *CorruptError values naming the snapshot,
//     VM, stream, chunk index, address and file. Snapshot.Verify checks
//     everything and reports every problem.
//   - Writing a stream holds at most three chunk buffers and two compressed
//     buffers (about 22 MiB at worst, whatever the stream's size): one
//     goroutine chunks and hashes while two compress and write. Streams are
//     written concurrently by independent goroutines; identical chunks written
//     at the same time by two streams or two writers are stored once.
//   - GC runs only with the store to itself (ErrBusy otherwise), so it never
//     removes a chunk that an unfinished writer deduplicated against or an
//     open snapshot is reading.
//
// The package never reads the clock: creation times come from the caller.
package store
