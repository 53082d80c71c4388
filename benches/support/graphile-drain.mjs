// graphile-worker's own perf test, one run: N no-op jobs added first (as its perfTest/init.js
// does, with graphile_worker.add_job over generate_series), then drained by one worker with
// `concurrency` W through runOnce, which returns when no job is left. Prints jobs/s.
// Usage: PERF_DATABASE_URL=postgres://… node graphile-drain.mjs N W
import { Logger, runMigrations, runOnce } from "graphile-worker";
import pg from "pg";

const url = process.env.PERF_DATABASE_URL;
const n = Number(process.argv[2] ?? 20000);
const concurrency = Number(process.argv[3] ?? 1);
const pgPool = new pg.Pool({ connectionString: url, max: concurrency + 2 });
const logger = new Logger(() => (level, message) => {
  if (level === "error") console.error(message);
});

await runMigrations({ pgPool, logger });
await pgPool.query(
  "select graphile_worker.add_job('noop', json_build_object('id', i)) from generate_series(1, $1) i",
  [n],
);
let ran = 0;
const start = process.hrtime.bigint();
await runOnce({
  pgPool,
  concurrency,
  logger,
  noHandleSignals: true,
  taskList: {
    noop: async () => {
      ran += 1;
    },
  },
});
const secs = Number(process.hrtime.bigint() - start) / 1e9;
const left = (await pgPool.query("select count(*)::int as c from graphile_worker.jobs")).rows[0].c;
await pgPool.end();
if (ran !== n || left !== 0) {
  console.error(`graphile-worker ran ${ran} of ${n} jobs, ${left} left`);
  process.exit(1);
}
console.log(JSON.stringify({ jobs: n, concurrency, seconds: secs, jobs_per_sec: n / secs }));
