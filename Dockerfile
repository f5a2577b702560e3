# One image for the API and the workers; the command chooses the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY quantcore/__init__.py quantcore/__init__.py
COPY service/__init__.py service/__init__.py
COPY workers/__init__.py workers/__init__.py
RUN pip install . && pip uninstall -y quantserve

COPY quantcore quantcore
COPY service service
COPY workers workers
# The numba kernels compiled into the image: a worker's first jobs load them instead of
# compiling them (about 50 s of CPU). Built for this build host's CPU; on another CPU numba
# compiles again on first use, into the same (writable) folder.
ENV NUMBA_CACHE_DIR=/app/numba-cache
RUN pip install --no-deps . \
    && quantserve warm \
    && useradd --create-home --uid 10001 quantserve \
    && mkdir -p /app/var && chown -R quantserve /app/var /app/numba-cache

USER quantserve
EXPOSE 8000
CMD ["quantserve", "serve", "--no-worker", "--host", "0.0.0.0"]
