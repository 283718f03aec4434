// Command chclient is an analyst's client in Go: clickhouse-go v2 over HTTP, connected the
// way Grafana's ClickHouse data source connects (database/sql, Protocol HTTP).
//
// It reads a JSON spec on stdin (queries with bound parameters, the metadata queries, the
// database), runs everything against the server and prints one JSON line: typed results,
// metadata, what two sessions see of each other's temporary tables, and every error met.
//
//	chclient -url http://127.0.0.1:8123 -user analyst -password pw -compression lz4 < spec.json
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

type query struct {
	Name   string         `json:"name"`
	SQL    string         `json:"sql"`
	Params map[string]any `json:"params"`
}

type spec struct {
	Database string  `json:"database"`
	Queries  []query `json:"queries"`
	Metadata []query `json:"metadata"`
	Temp     string  `json:"temp_table"`
}

type column struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Native string `json:"native"`
}

type result struct {
	Columns []column `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

func main() {
	rawURL := flag.String("url", os.Getenv("CH_URL"), "the server's HTTP URL")
	user := flag.String("user", os.Getenv("CH_USER"), "user")
	password := flag.String("password", os.Getenv("CH_PASSWORD"), "password")
	compression := flag.String("compression", "none", "none, lz4, zstd, gzip, deflate or br")
	flag.Parse()

	var s spec
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil {
		fail(err)
	}
	u, err := url.Parse(*rawURL)
	if err != nil {
		fail(err)
	}
	out := map[string]any{"client": "clickhouse-go", "compression": *compression}
	errs := map[string]string{}
	ctx := context.Background()

	db := open(u.Host, s.Database, *user, *password, *compression, nil)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		errs["ping"] = err.Error()
	}
	queries := map[string]result{}
	for _, q := range s.Queries {
		params := clickhouse.Parameters{}
		for k, v := range q.Params {
			params[k] = fmt.Sprint(v)
		}
		r, err := run(clickhouse.Context(ctx, clickhouse.WithParameters(params)), db, q.SQL)
		if err != nil {
			errs["query "+q.Name] = err.Error()
			continue
		}
		queries[q.Name] = r
	}
	out["queries"] = queries
	metadata := map[string]result{}
	for _, q := range s.Metadata {
		r, err := run(ctx, db, q.SQL)
		if err != nil {
			errs["metadata "+q.Name] = err.Error()
			continue
		}
		metadata[q.Name] = r
	}
	out["metadata"] = metadata
	out["temp"] = sessions(ctx, u.Host, s, *user, *password, *compression, errs)
	out["errors"] = errs
	line, err := json.Marshal(out)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(line))
}

func open(addr, database, user, password, compression string, settings clickhouse.Settings) *sql.DB {
	opts := &clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    clickhouse.HTTP,
		Auth:        clickhouse.Auth{Database: database, Username: user, Password: password},
		DialTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second,
		Settings:    settings,
	}
	methods := map[string]clickhouse.CompressionMethod{
		"lz4": clickhouse.CompressionLZ4, "zstd": clickhouse.CompressionZSTD,
		"gzip": clickhouse.CompressionGZIP, "deflate": clickhouse.CompressionDeflate,
		"br": clickhouse.CompressionBrotli,
	}
	if m, ok := methods[compression]; ok {
		opts.Compression = &clickhouse.Compression{Method: m}
	}
	db := clickhouse.OpenDB(opts)
	db.SetMaxOpenConns(1)
	return db
}

// sessions: one session makes a temporary table and reads it back; another session does
// not see it, and may make its own of the same name.
func sessions(ctx context.Context, addr string, s spec, user, password, compression string, errs map[string]string) map[string]any {
	got := map[string]any{}
	a := open(addr, s.Database, user, password, compression, clickhouse.Settings{"session_id": sessionID()})
	b := open(addr, s.Database, user, password, compression, clickhouse.Settings{"session_id": sessionID()})
	defer a.Close()
	defer b.Close()
	steps := []struct {
		name string
		db   *sql.DB
		sql  string
	}{
		{"a create", a, "CREATE TEMPORARY TABLE " + s.Temp + " (n UInt32) ENGINE = Memory"},
		{"a insert", a, "INSERT INTO " + s.Temp + " VALUES (1), (2), (3)"},
	}
	for _, st := range steps {
		if _, err := st.db.ExecContext(ctx, st.sql); err != nil {
			errs["temp "+st.name] = err.Error()
		}
	}
	if r, err := run(ctx, a, "SELECT count(), sum(n) FROM "+s.Temp); err != nil {
		errs["temp a select"] = err.Error()
	} else {
		got["own"] = r.Rows
	}
	if r, err := run(ctx, b, "SELECT count() FROM "+s.Temp); err != nil {
		got["other_error"] = err.Error()
	} else {
		got["other_rows"] = r.Rows
	}
	if _, err := b.ExecContext(ctx, "CREATE TEMPORARY TABLE "+s.Temp+" (n UInt32) ENGINE = Memory"); err != nil {
		errs["temp b create"] = err.Error()
	} else if r, err := run(ctx, b, "SELECT count() FROM "+s.Temp); err != nil {
		errs["temp b select"] = err.Error()
	} else {
		got["other_own"] = r.Rows
	}
	return got
}

func sessionID() string {
	buf := make([]byte, 8)
	if _, err := rand.Read(buf); err != nil {
		fail(err)
	}
	return "go-" + hex.EncodeToString(buf)
}

func run(ctx context.Context, db *sql.DB, text string) (result, error) {
	rows, err := db.QueryContext(ctx, text)
	if err != nil {
		return result{}, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return result{}, err
	}
	r := result{Rows: [][]any{}}
	for _, t := range types {
		r.Columns = append(r.Columns, column{Name: t.Name(), Type: t.DatabaseTypeName(), Native: t.ScanType().String()})
	}
	for rows.Next() {
		cells := make([]any, len(types))
		for i, t := range types {
			cells[i] = reflect.New(t.ScanType()).Interface()
		}
		if err := rows.Scan(cells...); err != nil {
			return result{}, err
		}
		row := make([]any, len(cells))
		for i, c := range cells {
			row[i] = plain(reflect.ValueOf(c).Elem())
		}
		r.Rows = append(r.Rows, row)
	}
	return r, rows.Err()
}

// plain: a scanned value as JSON shows it (times in UTC RFC 3339, decimals as strings).
func plain(v reflect.Value) any {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case fmt.Stringer:
		return x.String()
	}
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = plain(v.Index(i))
		}
		return out
	}
	return v.Interface()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "chclient:", err)
	os.Exit(2)
}
