/**
 * Weekly opening hours and the store's local clock. Hours are wall-clock
 * intervals per weekday in the store's IANA time zone; an interval whose end
 * is not after its start runs past midnight into the next day (a dark store
 * open 06:00-02:00 is open at 01:30 on the following day).
 */
import { invalidArgument } from '../../engine/index.ts';

export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

/** ["HH:MM", "HH:MM"]: start 00:00-23:59, end 00:00-24:00; end <= start runs past midnight. */
export type HoursInterval = readonly [string, string];

/** Intervals per weekday; a day that is missing or empty is closed. */
export type WeeklyHours = Partial<Record<Weekday, readonly HoursInterval[]>>;

/** The same hours every day of the week. */
export function everyDay(...intervals: HoursInterval[]): WeeklyHours {
  return Object.fromEntries(WEEKDAYS.map((d) => [d, intervals])) as WeeklyHours;
}

const MINUTES_PER_DAY = 24 * 60;
const HHMM = /^([01]\d|2[0-4]):([0-5]\d)$/;

function minutesOf(hhmm: string): number {
  const m = HHMM.exec(hhmm);
  if (!m) return NaN;
  const v = Number(m[1]) * 60 + Number(m[2]);
  return v > MINUTES_PER_DAY ? NaN : v;
}

/**
 * Checks opening hours before they are stored, so evaluation never meets a
 * malformed interval. @throws QD_ERR_INVALID_ARGUMENT (field: hours).
 */
export function checkHours(hours: unknown): WeeklyHours {
  if (hours === null || typeof hours !== 'object' || Array.isArray(hours)) throw invalidArgument('hours', 'must be an object of weekday -> intervals');
  for (const [day, intervals] of Object.entries(hours as Record<string, unknown>)) {
    if (!(WEEKDAYS as readonly string[]).includes(day)) throw invalidArgument('hours', `unknown weekday ${day}, expected one of ${WEEKDAYS.join(',')}`);
    if (!Array.isArray(intervals)) throw invalidArgument('hours', `${day} must be a list of [start, end] intervals`);
    for (const iv of intervals) {
      if (!Array.isArray(iv) || iv.length !== 2 || typeof iv[0] !== 'string' || typeof iv[1] !== 'string') {
        throw invalidArgument('hours', `${day} has an interval that is not ["HH:MM", "HH:MM"]`);
      }
      const start = minutesOf(iv[0]);
      const end = minutesOf(iv[1]);
      if (!(start < MINUTES_PER_DAY)) throw invalidArgument('hours', `${day} start ${iv[0]} must be 00:00 to 23:59`);
      if (Number.isNaN(end)) throw invalidArgument('hours', `${day} end ${iv[1]} must be 00:00 to 24:00`);
      // Equal ends would mean either nothing or all day; make the caller say which (00:00-24:00).
      if (end === start) throw invalidArgument('hours', `${day} interval ${iv[0]}-${iv[1]} is empty; use 00:00-24:00 for all day`);
    }
  }
  return hours as WeeklyHours;
}

/** @throws QD_ERR_INVALID_ARGUMENT (field: timeZone) for a zone Intl does not know. */
export function checkTimeZone(timeZone: unknown): string {
  if (typeof timeZone !== 'string' || timeZone.length === 0) throw invalidArgument('timeZone', 'must be an IANA time zone');
  try {
    formatterFor(timeZone);
  } catch {
    throw invalidArgument('timeZone', `unknown time zone ${timeZone}`);
  }
  return timeZone;
}

// Building a DateTimeFormat costs far more than using one; stores share few zones.
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(timeZone, f);
  }
  return f;
}

export interface LocalTime {
  /** 0 = Sunday. */
  weekday: number;
  /** Minutes since local midnight. */
  minute: number;
}

/**
 * The last answer per zone, by UTC minute: every order asks about its store's
 * zone at about the current minute, and formatToParts is slow. Today's zone
 * offsets are whole minutes, so one UTC minute is one local minute.
 */
const lastLocal = new Map<string, { utcMinute: number; local: LocalTime }>();

/** Weekday and wall-clock minute at `at` (epoch ms) in `timeZone`. */
export function localTime(timeZone: string, at: number): LocalTime {
  const utcMinute = Math.floor(at / 60_000);
  const last = lastLocal.get(timeZone);
  if (last && last.utcMinute === utcMinute) return { ...last.local };
  const local = computeLocalTime(timeZone, at);
  lastLocal.set(timeZone, { utcMinute, local });
  return { ...local };
}

function computeLocalTime(timeZone: string, at: number): LocalTime {
  let weekday = -1;
  let hour = 0;
  let minute = 0;
  for (const p of formatterFor(timeZone).formatToParts(at)) {
    if (p.type === 'weekday') weekday = WEEKDAYS.indexOf(p.value.toLowerCase() as Weekday);
    else if (p.type === 'hour') hour = Number(p.value) % 24;
    else if (p.type === 'minute') minute = Number(p.value);
  }
  if (weekday < 0) throw new Error(`Intl gave no weekday for ${timeZone}`);
  return { weekday, minute: hour * 60 + minute };
}

const hhmm = (m: number) => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
const dayName = (d: number) => WEEKDAYS[((d % 7) + 7) % 7];

/** Whether hours are open at a local time, and if not, why (with the next opening when there is one). */
export function openAt(hours: WeeklyHours, local: LocalTime, timeZone: string): { open: true } | { open: false; reason: string } {
  const { weekday: d, minute: m } = local;
  for (const [s, e] of hours[dayName(d)] ?? []) {
    const start = minutesOf(s);
    const end = minutesOf(e);
    if (end > start ? m >= start && m < end : m >= start) return { open: true };
  }
  // Yesterday's intervals that run past midnight reach into today.
  for (const [s, e] of hours[dayName(d - 1)] ?? []) {
    const end = minutesOf(e);
    if (end <= minutesOf(s) && m < end) return { open: true };
  }
  let next: { day: number; minute: number } | null = null;
  for (let offset = 0; offset <= 7 && !next; offset++) {
    const starts = (hours[dayName(d + offset)] ?? []).map(([s]) => minutesOf(s)).filter((s) => offset > 0 || s > m);
    if (starts.length > 0) next = { day: d + offset, minute: Math.min(...starts) };
  }
  const now = `${dayName(d)} ${hhmm(m)} ${timeZone}`;
  return { open: false, reason: next ? `outside opening hours at ${now}; opens ${dayName(next.day)} ${hhmm(next.minute)}` : `no opening hours (${now})` };
}
