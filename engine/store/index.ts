/**
 * engine/store: the durability port, its in-process implementation and the
 * group committer that batches appends.
 */

// Port
export type { EventStore, LiveStream, RiderDailyStats, RiderStatsDelta, Snapshot, StoredEvent } from './event-store.ts';

// In-process store
export { MemoryEventStore } from './memory-store.ts';

// Group commit
export { CommitGapError, GroupCommitter } from './group-commit.ts';
export type { GroupCommitCounters, GroupCommitOptions } from './group-commit.ts';
