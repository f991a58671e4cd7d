# One image for every part: `imgstream api` (default) or `imgstream worker`.
# The HEALTHCHECK below is the API's; a worker container needs its own, `imgstream health`
# (docker-compose.yml sets it; with `docker run`: --health-cmd "imgstream health").
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 imgstream && mkdir /data && chown imgstream /data
COPY --from=build /install /usr/local
USER imgstream
ENV IMGSTREAM_HOST=0.0.0.0 \
    IMGSTREAM_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2)" || exit 1
CMD ["imgstream", "api"]
