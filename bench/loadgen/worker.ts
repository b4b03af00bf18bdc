/** One load generator process: holds its share of the riders' and customers' sockets (see loadgen.ts). */
import { LoadShard } from './loadgen.ts';
import { serveRpc } from './rpc.ts';

let shard: LoadShard | null = null;
const mine = (): LoadShard => {
  if (!shard) throw new Error('init first');
  return shard;
};

serveRpc({
  init: (spec: ConstructorParameters<typeof LoadShard>[0]) => {
    shard = new LoadShard(spec);
    return process.pid;
  },
  connect: () => mine().connect(),
  prepare: () => mine().prepare(),
  progress: () => mine().progress(),
  run: (args: Parameters<LoadShard['run']>[0]) => mine().run(args),
  close: () => shard?.close(),
});
