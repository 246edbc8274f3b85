# DistriNews inference server for a Hugging Face Docker Space (CPU).
#
# Build with the model baked in (export it first, for the Space's CPU):
#   mlflow run . -e export --env-manager local -P data=../shared/data/ag_news \
#       -P target=avx2 -P output=serving-model
#   docker build -t distrinews .
# or fetch it from MLflow at start instead (build with an empty serving-model/):
#   mkdir -p serving-model && docker build -t distrinews .
#   docker run -e DISTRINEWS_MODEL=models:/distrinews@champion -e DISTRINEWS_RELOAD_SECONDS=60 \
#       -e MLFLOW_TRACKING_URI=... -p 7860:7860 distrinews
FROM python:3.11-slim

# Spaces run the container as uid 1000.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

COPY --chown=user pyproject.toml README.md ./
COPY --chown=user distrinews/ distrinews/
COPY --chown=user pipelines/ pipelines/
COPY --chown=user serving/ serving/
ARG MODEL_DIR=serving-model
COPY --chown=user ${MODEL_DIR}/ /tmp/model/
# No pip cache in the image.
ENV PIP_NO_CACHE_DIR=1
RUN sh serving/install.sh . /tmp/model /home/user/app/model && rm -rf /tmp/model

# The prediction log: a SQLite file in a folder the server's user owns (a Space with
# persistent storage mounts /data: set DISTRINEWS_PREDICTION_LOG=sqlite:////data/predictions.db
# to keep it across restarts, or a PostgreSQL URL).
RUN mkdir -p /home/user/log && chown user /home/user/log

USER user
ENV DISTRINEWS_MODEL=/home/user/app/model \
    DISTRINEWS_PREDICTION_LOG=sqlite:////home/user/log/predictions.db \
    PYTHONUNBUFFERED=1
EXPOSE 7860
CMD ["python", "-m", "serving", "--host", "0.0.0.0", "--port", "7860"]
