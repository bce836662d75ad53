# The MLflow tracking server of docker/compose.yaml: the official image plus the
# PostgreSQL driver and boto3 for the MinIO (S3) artifact store.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary boto3
