// An analyst's client in Node: @clickhouse/client (HTTP), as web tools use it.
//
// Reads a JSON spec on stdin (queries with bound parameters, the metadata queries, the
// database), runs everything and prints one JSON line: typed results, metadata, what two
// sessions see of each other's temporary tables, and every error met.
//
//   node client.mjs --url http://127.0.0.1:8123 --user analyst --password pw --compression on < spec.json
import { randomBytes } from 'node:crypto'
import { ClickHouseLogLevel, createClient } from '@clickhouse/client'

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : fallback
}

const url = arg('url', process.env.CH_URL)
const username = arg('user', process.env.CH_USER)
const password = arg('password', process.env.CH_PASSWORD)
const compressed = arg('compression', 'off') === 'on'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const spec = JSON.parse(Buffer.concat(chunks).toString('utf8'))

function connect(extra = {}) {
  return createClient({
    url, username, password, database: spec.database,
    compression: { request: compressed, response: compressed },
    // Decimals as strings: a JavaScript number cannot hold money exactly.
    clickhouse_settings: { output_format_json_quote_decimals: 1 },
    // Errors are reported in the JSON line, not logged.
    log: { level: ClickHouseLogLevel.OFF },
    ...extra,
  })
}

// Rows with ClickHouse's type names: the format's header carries them.
async function run(client, query, params = {}) {
  const rs = await client.query({
    query, query_params: params, format: 'JSONCompactEachRowWithNamesAndTypes',
  })
  const [names, types, ...rows] = await rs.json()
  const columns = names.map((name, i) => ({
    name, type: types[i], native: rows.length ? typeOf(rows[0][i]) : 'none',
  }))
  return { columns, rows }
}

// An error as ClickHouse words it: "Code: 60. <message> (UNKNOWN_TABLE)".
function said(e) {
  return e?.code ? `Code: ${e.code}. ${e.message} (${e.type})` : String(e?.message ?? e)
}

function typeOf(v) {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v
}

const out = { client: '@clickhouse/client', compression: compressed ? 'on' : 'off' }
const errors = {}
const client = connect()
try {
  const ping = await client.ping()
  if (!ping.success) errors.ping = String(ping.error)
  out.queries = {}
  for (const q of spec.queries) {
    try {
      out.queries[q.name] = await run(client, q.sql, q.params)
    } catch (e) {
      errors[`query ${q.name}`] = said(e)
    }
  }
  out.metadata = {}
  for (const q of spec.metadata) {
    try {
      out.metadata[q.name] = await run(client, q.sql)
    } catch (e) {
      errors[`metadata ${q.name}`] = said(e)
    }
  }
  out.temp = await sessions(errors)
} finally {
  await client.close()
}
out.errors = errors
console.log(JSON.stringify(out))

// One session makes a temporary table and reads it back; another does not see it, and
// may make its own of the same name.
async function sessions(errors) {
  const got = {}
  const id = () => `node-${randomBytes(8).toString('hex')}`
  const a = connect({ session_id: id() })
  const b = connect({ session_id: id() })
  const t = spec.temp_table
  try {
    for (const [name, c, sql] of [
      ['a create', a, `CREATE TEMPORARY TABLE ${t} (n UInt32) ENGINE = Memory`],
      ['a insert', a, `INSERT INTO ${t} VALUES (1), (2), (3)`],
    ]) {
      try { await c.command({ query: sql }) } catch (e) { errors[`temp ${name}`] = said(e) }
    }
    try { got.own = (await run(a, `SELECT count(), sum(n) FROM ${t}`)).rows } catch (e) { errors['temp a select'] = said(e) }
    try { got.other_rows = (await run(b, `SELECT count() FROM ${t}`)).rows } catch (e) { got.other_error = said(e) }
    try {
      await b.command({ query: `CREATE TEMPORARY TABLE ${t} (n UInt32) ENGINE = Memory` })
      got.other_own = (await run(b, `SELECT count() FROM ${t}`)).rows
    } catch (e) { errors['temp b'] = said(e) }
  } finally {
    await a.close()
    await b.close()
  }
  return got
}
