# VoiceGate for GPU hosts: the gateway with PersonaPlex on CUDA. Weights are not baked in:
# mount the release folder at /models (VOICEGATE_MODEL_DIR). Personas can be mounted over
# /app/personas (edits take effect for new calls while serving).
#
#   docker build -t voicegate .
#   docker run --gpus all -p 8000:8000 -v /srv/personaplex-7b:/models:ro \
#       -e VOICEGATE_PUBLIC_URL=https://gw.example.com -e VOICEGATE_REDIS_URL=redis://redis:6379/0 \
#       voicegate
#
# infra/docker-compose.yml runs it next to Redis. Build args pick the CUDA image and torch build;
# keep the CUDA major of the base image and of the torch index the same.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Ubuntu 24.04's Python is 3.12 (stdlib audioop still there). tini forwards SIGTERM so the
# gateway drains its calls (VOICEGATE_DRAIN_TIMEOUT_S) before it exits.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH}

# torch first, from the CUDA index: the package asks only for torch>=2.4, so the CUDA build stays.
RUN pip install --upgrade pip \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY voicegate ./voicegate
RUN pip install '.[s3]' && python -c "import torch, voicegate.audio; print('torch', torch.__version__)"

COPY personas ./personas
COPY telephony ./telephony

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin voicegate \
    && mkdir -p /models /var/lib/voicegate/journal \
    && chown -R voicegate /var/lib/voicegate /app/personas

ENV VOICEGATE_ENGINE=personaplex \
    VOICEGATE_MODEL_DIR=/models \
    VOICEGATE_DEVICE=cuda \
    VOICEGATE_HOST=0.0.0.0 \
    VOICEGATE_PORT=8000 \
    VOICEGATE_PERSONAS_DIR=/app/personas \
    VOICEGATE_NUMBERS_FILE=/app/telephony/numbers.yaml \
    VOICEGATE_EVENTS_JOURNAL_DIR=/var/lib/voicegate/journal

VOLUME ["/models", "/var/lib/voicegate"]
# HTTP (Twilio webhooks and media, WebRTC, /metrics), SIP, RTP (VOICEGATE_RTP_PORT_MIN..MAX)
EXPOSE 8000 5060/udp 5060/tcp 20000-20999/udp

USER voicegate
HEALTHCHECK --interval=15s --timeout=3s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VOICEGATE_PORT', '8000'), timeout=2)"]

ENTRYPOINT ["tini", "--", "voicegate"]
CMD ["serve"]
