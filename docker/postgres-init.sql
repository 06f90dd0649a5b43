-- One PostgreSQL server, two databases: Prefect's (asyncpg) and MLflow's (psycopg2).
CREATE USER prefect WITH PASSWORD 'prefect';
CREATE DATABASE prefect OWNER prefect;
CREATE USER mlflow WITH PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
