"""PostgreSQL adapters: schema migrations and the sinks each flow writes through."""
