/**
 * Where a shard runs: in this thread (tests, tiny nodes) or in a worker
 * thread. Both take one batch and answer with one reply, in order.
 */
import { Worker } from 'node:worker_threads';
import { Shard } from './shard.ts';
import type { EngineConfig } from '../config.ts';
import type { ShardBatch, ShardReply } from './protocol.ts';

export interface ShardHost {
  readonly id: number;
  /** Sends one batch; `onReply` gets the replies in the order batches were sent. */
  send(batch: ShardBatch, transfer?: ArrayBuffer[]): void;
  close(): Promise<void>;
}

export type ReplyHandler = (shardId: number, reply: ShardReply) => void;

export class InlineShardHost implements ShardHost {
  readonly id: number;
  readonly #shard: Shard;
  readonly #onReply: ReplyHandler;
  constructor(id: number, config: EngineConfig, onReply: ReplyHandler) {
    this.id = id;
    this.#shard = new Shard(id, config);
    this.#onReply = onReply;
  }
  send(batch: ShardBatch): void {
    // Asynchronous like a worker, so callers can't come to depend on re-entrancy.
    setImmediate(() => this.#onReply(this.id, this.#shard.handleBatch(batch)));
  }
  async close(): Promise<void> {}
}

export class WorkerShardHost implements ShardHost {
  readonly id: number;
  readonly #worker: Worker;
  #closed = false;
  constructor(id: number, config: EngineConfig, onReply: ReplyHandler, onError: (err: Error) => void) {
    this.id = id;
    const entry = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url).href;
    this.#worker = new Worker(new URL('./worker-boot.mjs', import.meta.url), {
      workerData: { entry, shardId: id, config },
      name: `shard-${id}`,
    });
    this.#worker.on('message', (reply: ShardReply) => onReply(id, reply));
    this.#worker.on('error', (err) => onError(err));
    this.#worker.on('exit', (code) => {
      if (!this.#closed) onError(new Error(`shard ${id} worker exited with code ${code}`));
    });
  }
  send(batch: ShardBatch, transfer?: ArrayBuffer[]): void {
    this.#worker.postMessage(batch, transfer ?? []);
  }
  async close(): Promise<void> {
    this.#closed = true;
    await this.#worker.terminate();
  }
}
