# One image for every viewlb process; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin viewlb \
    && mkdir -p /app/var && chown viewlb /app/var \
    && VIEWLB_PRODUCTION=1 DJANGO_SECRET_KEY=build-only DJANGO_ALLOWED_HOSTS=build python manage.py collectstatic --noinput
USER viewlb
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "viewlb_site.asgi:application"]
