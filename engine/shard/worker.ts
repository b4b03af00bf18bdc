/**
 * Worker-thread entry of one shard: receives batches, answers each with one
 * message. A throw inside the shard is already turned into an error result,
 * so the loop never dies on bad input.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Shard } from './shard.ts';
import type { ShardBatch } from './protocol.ts';
import type { EngineConfig } from '../config.ts';

const { shardId, config } = workerData as { shardId: number; config: EngineConfig };
const shard = new Shard(shardId, config);

parentPort!.on('message', (batch: ShardBatch) => {
  parentPort!.postMessage(shard.handleBatch(batch));
});
