// An analyst's client in Java: the ClickHouse JDBC driver with its default settings (its
// own compression on), as DBeaver, DataGrip and Tableau use it.
//
// Reads a JSON spec on stdin (queries with bound parameters, the metadata queries, the
// database), runs everything and prints one JSON line: typed results, JDBC metadata
// (getTables, getColumns as DBeaver calls them), what two sessions see of each other's
// temporary tables, and every error met.
//
//   java -cp 'lib/*:classes' Main --url http://127.0.0.1:8123 --user analyst --password pw
//        [--compress false] < spec.json
// (or CH_URL, CH_USER, CH_PASSWORD, CH_COMPRESS in the environment)
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.temporal.TemporalAccessor;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class Main {
    private static final Pattern PARAM = Pattern.compile("\\{(\\w+):(\\w+)\\}");

    public static void main(String[] args) throws IOException, SQLException {
        Map<String, String> opt = new LinkedHashMap<>();
        // Arguments, or the environment as the other clients read it.
        putEnv(opt, "url", "CH_URL");
        putEnv(opt, "user", "CH_USER");
        putEnv(opt, "password", "CH_PASSWORD");
        putEnv(opt, "compress", "CH_COMPRESS");
        for (int i = 0; i + 1 < args.length; i += 2) {
            opt.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> spec = (Map<String, Object>) Json.parse(
                new String(System.in.readAllBytes(), StandardCharsets.UTF_8));
        String database = (String) spec.get("database");
        // http://host:port -> jdbc:clickhouse:http://host:port/croupier, as DBeaver's URL.
        String jdbcUrl = "jdbc:clickhouse:" + opt.get("url").replaceAll("/+$", "") + "/" + database;

        Map<String, Object> out = new LinkedHashMap<>();
        Map<String, Object> errors = new LinkedHashMap<>();
        out.put("client", "clickhouse-jdbc");
        out.put("compression", opt.getOrDefault("compress", "default"));
        try (Connection conn = connect(jdbcUrl, opt, null)) {
            out.put("driver", conn.getMetaData().getDriverVersion());
            Map<String, Object> queries = new LinkedHashMap<>();
            for (Object o : (List<?>) spec.get("queries")) {
                Map<?, ?> q = (Map<?, ?>) o;
                String name = (String) q.get("name");
                try {
                    queries.put(name, prepared(conn, (String) q.get("sql"), (Map<?, ?>) q.get("params")));
                } catch (SQLException e) {
                    errors.put("query " + name, message(e));
                }
            }
            out.put("queries", queries);
            Map<String, Object> metadata = new LinkedHashMap<>();
            for (Object o : (List<?>) spec.get("metadata")) {
                Map<?, ?> q = (Map<?, ?>) o;
                String name = (String) q.get("name");
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery((String) q.get("sql"))) {
                    metadata.put(name, table(rs));
                } catch (SQLException e) {
                    errors.put("metadata " + name, message(e));
                }
            }
            out.put("metadata", metadata);
            out.put("jdbc", jdbcMetadata(conn, database, errors));
        } catch (SQLException e) {
            errors.put("connect", message(e));
        }
        out.put("temp", sessions(jdbcUrl, opt, (String) spec.get("temp_table"), errors));
        out.put("errors", errors);
        System.out.println(Json.write(out));
    }

    static void putEnv(Map<String, String> opt, String key, String variable) {
        String value = System.getenv(variable);
        if (value != null && !value.isEmpty()) {
            opt.put(key, value);
        }
    }

    static Connection connect(String url, Map<String, String> opt, String session) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", opt.get("user"));
        props.setProperty("password", opt.get("password"));
        if (opt.containsKey("compress")) {
            props.setProperty("compress", opt.get("compress"));
        }
        if (session != null) {
            props.setProperty("clickhouse_setting_session_id", session);
        }
        return DriverManager.getConnection(url, props);
    }

    // The spec's {name:Type} parameters as JDBC placeholders, bound in order.
    static Map<String, Object> prepared(Connection conn, String sql, Map<?, ?> params) throws SQLException {
        Matcher m = PARAM.matcher(sql);
        List<String[]> order = new ArrayList<>();
        while (m.find()) {
            order.add(new String[] {m.group(1), m.group(2)});
        }
        try (PreparedStatement ps = conn.prepareStatement(m.replaceAll("?"))) {
            for (int i = 0; i < order.size(); i++) {
                Object v = params.get(order.get(i)[0]);
                if (order.get(i)[1].startsWith("UInt") || order.get(i)[1].startsWith("Int")) {
                    ps.setLong(i + 1, ((Number) v).longValue());
                } else {
                    ps.setString(i + 1, String.valueOf(v));
                }
            }
            try (ResultSet rs = ps.executeQuery()) {
                return table(rs);
            }
        }
    }

    static Map<String, Object> table(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<Object> rows = new ArrayList<>();
        List<String> natives = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            natives.add("none");
        }
        while (rs.next()) {
            List<Object> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                Object v = rs.getObject(i);
                if (v != null) {
                    natives.set(i - 1, v.getClass().getName());
                }
                row.add(plain(v));
            }
            rows.add(row);
        }
        List<Object> columns = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            Map<String, Object> c = new LinkedHashMap<>();
            c.put("name", md.getColumnLabel(i));
            c.put("type", md.getColumnTypeName(i));
            c.put("native", natives.get(i - 1));
            columns.add(c);
        }
        Map<String, Object> t = new LinkedHashMap<>();
        t.put("columns", columns);
        t.put("rows", rows);
        return t;
    }

    // Values as JSON shows them: decimals and times as strings, times in UTC.
    static Object plain(Object v) {
        if (v == null || v instanceof String || v instanceof Boolean) {
            return v;
        }
        if (v instanceof BigDecimal d) {
            return d.toPlainString();
        }
        if (v instanceof Number n) {
            return n instanceof Double || n instanceof Float ? n.doubleValue() : new BigDecimal(n.toString());
        }
        if (v instanceof java.sql.Timestamp t) {
            return t.toInstant().toString();
        }
        if (v instanceof java.sql.Date d) {
            return d.toLocalDate().toString();
        }
        if (v instanceof ZonedDateTime z) {
            return z.toInstant().toString();
        }
        if (v instanceof OffsetDateTime o) {
            return o.toInstant().toString();
        }
        if (v instanceof LocalDateTime l) {
            return l.toInstant(ZoneOffset.UTC).toString();
        }
        if (v instanceof TemporalAccessor) {
            return v.toString();
        }
        return v.toString();
    }

    // What DBeaver's navigator asks: the schemas, the tables of one, the columns of a table.
    static Map<String, Object> jdbcMetadata(Connection conn, String database, Map<String, Object> errors) {
        Map<String, Object> got = new LinkedHashMap<>();
        try {
            DatabaseMetaData md = conn.getMetaData();
            List<Object> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            got.put("schemas", schemas);
            List<Object> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, database, "%", null)) {
                while (rs.next()) {
                    tables.add(List.of(rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE")));
                }
            }
            got.put("tables", tables);
            List<Object> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, database, "ggr_daily", "%")) {
                while (rs.next()) {
                    columns.add(List.of(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"),
                            rs.getInt("DATA_TYPE")));
                }
            }
            got.put("columns", columns);
        } catch (SQLException e) {
            errors.put("jdbc metadata", message(e));
        }
        return got;
    }

    // One session makes a temporary table and reads it back; another does not see it, and
    // may make its own of the same name.
    static Map<String, Object> sessions(String url, Map<String, String> opt, String t, Map<String, Object> errors) {
        Map<String, Object> got = new LinkedHashMap<>();
        try (Connection a = connect(url, opt, "jdbc-" + UUID.randomUUID());
             Connection b = connect(url, opt, "jdbc-" + UUID.randomUUID())) {
            String[][] steps = {
                {"a create", "CREATE TEMPORARY TABLE " + t + " (n UInt32) ENGINE = Memory"},
                {"a insert", "INSERT INTO " + t + " VALUES (1), (2), (3)"},
            };
            for (String[] step : steps) {
                try (Statement st = a.createStatement()) {
                    st.execute(step[1]);
                } catch (SQLException e) {
                    errors.put("temp " + step[0], message(e));
                }
            }
            try (Statement st = a.createStatement(); ResultSet rs = st.executeQuery("SELECT count(), sum(n) FROM " + t)) {
                got.put("own", table(rs).get("rows"));
            } catch (SQLException e) {
                errors.put("temp a select", message(e));
            }
            try (Statement st = b.createStatement(); ResultSet rs = st.executeQuery("SELECT count() FROM " + t)) {
                got.put("other_rows", table(rs).get("rows"));
            } catch (SQLException e) {
                got.put("other_error", message(e));
            }
            try (Statement st = b.createStatement()) {
                st.execute("CREATE TEMPORARY TABLE " + t + " (n UInt32) ENGINE = Memory");
                try (ResultSet rs = st.executeQuery("SELECT count() FROM " + t)) {
                    got.put("other_own", table(rs).get("rows"));
                }
            } catch (SQLException e) {
                errors.put("temp b", message(e));
            }
        } catch (SQLException e) {
            errors.put("temp connect", message(e));
        }
        return got;
    }

    static String message(Throwable e) {
        StringBuilder sb = new StringBuilder(String.valueOf(e.getMessage()));
        for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            sb.append(" | caused by: ").append(c.getMessage());
        }
        return sb.toString();
    }
}
