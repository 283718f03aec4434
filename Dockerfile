# The Croupier image: one `croupier` command for workers and one-shot jobs.
#   docker build -t croupier .
#   docker run --rm croupier topics create      # any `croupier` subcommand
# docker-compose.yml builds it and wires it to Kafka, PostgreSQL and ClickHouse.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY croupier/ croupier/
COPY config/ config/
COPY schemas/ schemas/
COPY streams/ streams/
COPY topologies/ topologies/
COPY sinks/ sinks/
COPY rules/ rules/
COPY rng/ rng/
# The jurisdiction policies and the casino game registry: the wheel carries them as data
# files (pyproject's [tool.setuptools.data-files]), where config.shipped finds them.
COPY policies/ policies/
COPY games/ games/
# constraints.txt pins the versions the test suite last passed with; every dependency
# ships a manylinux wheel for CPython 3.11, so the slim image needs no compiler.
RUN pip install --no-cache-dir -c constraints.txt ".[worker,embedded]" \
    && rm -rf build *.egg-info

# Faust writes its `<app id>-data` directory into the working directory: the user's home.
# .stack/ exists, owned by that user, so a named volume mounted there (the auditor's keys)
# starts with the image's ownership.
RUN useradd --create-home --uid 10001 --user-group croupier \
    && install -d -o croupier -g croupier /home/croupier/.stack
USER croupier
WORKDIR /home/croupier

ENTRYPOINT ["croupier"]
CMD ["worker"]
