# The elevation image: Apache Airflow with this project installed; docker-compose.yaml builds and runs it.
#
#   docker build -t elevation-airflow .                        # the deployment (target `elevation`)
#   docker build --target demo -t elevation-airflow-demo .     # plus the devkit's AWS emulator (compose's demo)
#
# The base image's Airflow version is pyproject.toml's `apache-airflow==` pin, and its Python one that
# `requires-python` allows (tests/deploy/test_compose.py checks both): `pip install` of the project then keeps
# that Airflow and adds exactly `[project].dependencies`.
FROM apache/airflow:3.3.2-python3.11 AS elevation

# Airflow's constraints file for this version (https://raw.githubusercontent.com/apache/airflow/
# constraints-3.3.2/constraints-3.11.txt) pins every provider to its version at Airflow's release; the
# project's lower bounds (e.g. the Amazon provider) may be newer. Empty by default: pyproject.toml's pins decide,
# and pip keeps the base image's constrained packages wherever they satisfy them. Give a URL to apply one.
ARG PIP_CONSTRAINT_URL=""

# The project as a package (its DAG-side code, migrations and report templates), from pyproject.toml alone.
COPY --chown=airflow:0 . /opt/elevation
RUN pip install --no-cache-dir ${PIP_CONSTRAINT_URL:+--constraint "${PIP_CONSTRAINT_URL}"} /opt/elevation

# The DAGs where Airflow reads them, the plugin (the API server's Slack and audit apps), the configuration example
# (compose mounts the real file at ELEVATION_CONFIG), and the mount points of compose's volumes, owned by the
# airflow user so that new named volumes are too.
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    ELEVATION_CONFIG=/opt/airflow/config/elevation.yaml
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/elevation_plugin.py /opt/airflow/plugins/elevation_plugin.py
COPY --chown=airflow:0 config/elevation.example.yaml /opt/airflow/config/elevation.example.yaml
RUN mkdir -p /opt/airflow/data /opt/airflow/reports /opt/airflow/demo /opt/airflow/auth

# The demo profile's image: the same, plus the project's `dev` extra for the AWS emulator (moto[server]).
FROM elevation AS demo
RUN pip install --no-cache-dir "/opt/elevation[dev]"
