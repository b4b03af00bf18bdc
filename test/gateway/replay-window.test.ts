// The outcomes a session remembers for replays: the last N, oldest dropped first, each answered as first sent.
import t from 'tap';
import { MessageType, type Message } from '../../gateway/protocol.ts';
import { ReplayWindow } from '../../gateway/replay-window.ts';

const fixAck = (s: number, accepted: number, stale: number, rejected: number): Message => ({ t: MessageType.ack, s, result: { accepted, stale, rejected } });

t.test('fix acks come back as sent, other outcomes as the same message', async (t) => {
  const w = new ReplayWindow(4);
  const online: Message = { t: MessageType.ack, s: 2, result: { state: 'available' } } as Message;
  const refused: Message = { t: MessageType.error, s: 3, code: 9, error: 'QD_ERR_NO_OFFER', message: 'no offer', state: 'available' };
  w.remember(1, fixAck(1, 10, 2, 1));
  w.remember(2, online);
  w.remember(3, refused);
  w.remember(4_294_967_295, fixAck(4_294_967_295, 500, 0, 0));
  t.same(w.outcome(1), fixAck(1, 10, 2, 1), 'a fix ack, rebuilt from its counts');
  t.equal(w.outcome(2), online, 'another ack: the message itself');
  t.equal(w.outcome(3), refused, 'an error: the message itself');
  t.same(w.outcome(4_294_967_295), fixAck(4_294_967_295, 500, 0, 0), 'the largest s and a full frame of fixes');
  t.equal(w.outcome(5), undefined, 'never remembered');
});

t.test('the oldest outcome goes first; a slot reused by a fix ack forgets the message it held', async (t) => {
  const w = new ReplayWindow(3);
  const offline: Message = { t: MessageType.ack, s: 1, result: { state: 'offline' } } as Message;
  w.remember(1, offline);
  w.remember(2, fixAck(2, 1, 0, 0));
  w.remember(3, fixAck(3, 2, 0, 0));
  t.equal(w.outcome(1), offline);
  w.remember(4, fixAck(4, 3, 0, 0));
  t.equal(w.outcome(1), undefined, 's 1 dropped: it was the oldest');
  t.same(w.outcome(4), fixAck(4, 3, 0, 0), 'its slot now answers the fix ack, not the old message');
  t.same([2, 3].map((s) => w.outcome(s)), [fixAck(2, 1, 0, 0), fixAck(3, 2, 0, 0)], 'the others kept');
  for (let s = 5; s < 50; s++) w.remember(s, fixAck(s, s, 0, 0));
  t.same([46, 47, 48, 49].map((s) => w.outcome(s)?.t === MessageType.ack), [false, true, true, true], 'after many turns, exactly the last 3');
});
