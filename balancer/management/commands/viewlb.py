"""`python manage.py viewlb export|apply|publish|createadmin`: the configuration as code.

    viewlb export [-o FILE]                     the whole configuration as YAML
    viewlb apply -f FILE [--dry-run] [--user U] validate, show the diff, publish
    viewlb publish [--user U] [-m COMMENT]      publish the draft (after editing in the console)
    viewlb createadmin [--username admin]       create or reset an administrator; prints the password
    viewlb trace CLIENT [--cookie V] [--vs NAME] [--json]
                                                which server a client would reach now, and why
"""
import json
import secrets
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from balancer import roles, services
from balancer.declarative import DeclarativeError


class Command(BaseCommand):
    help = "Export, apply and publish the viewlb configuration; create the first administrator."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="write the configuration as YAML")
        export.add_argument("-o", "--output", help="file to write (default: standard output)")
        apply = sub.add_parser("apply", help="replace the configuration with a YAML file and publish it")
        apply.add_argument("-f", "--file", required=True, help="YAML file, or - for standard input")
        apply.add_argument("--dry-run", action="store_true", help="validate and show the diff, change nothing")
        apply.add_argument("--user", help="user recorded as author (default: none)")
        apply.add_argument("-m", "--comment", default="", help="comment stored with the version")
        publish = sub.add_parser("publish", help="publish the draft as a new version")
        publish.add_argument("--user", help="user recorded as author (default: none)")
        publish.add_argument("-m", "--comment", default="", help="comment stored with the version")
        admin = sub.add_parser("createadmin", help="create or reset an administrator and print its password")
        admin.add_argument("--username", default="admin")
        trace = sub.add_parser("trace", help="which server a client would reach now on each VIP, and why")
        trace.add_argument("client", help="the client's IP address")
        trace.add_argument("--cookie", default="", help="layer 7: the session cookie's value, or a whole Cookie header")
        trace.add_argument("--vs", default="", help="only this virtual service")
        trace.add_argument("--json", dest="as_json", action="store_true", help="print the explanation as JSON")

    def handle(self, *args, action, **options):
        getattr(self, "do_" + action)(**options)

    def do_export(self, output=None, **options):
        text = services.export_config()
        if output:
            Path(output).write_text(text)
            self.stderr.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")

    def do_apply(self, file, dry_run=False, user=None, comment="", **options):
        text = sys.stdin.read() if file == "-" else self._read(file)
        try:
            diff, version = services.apply_config(text, self._user(user), dry_run=dry_run, comment=comment)
        except DeclarativeError as exc:
            raise CommandError(f"{file}: {exc}\nnothing was changed") from None
        self._show_diff(diff)
        if dry_run:
            self.stdout.write("dry run: nothing was changed")
        elif version is None:
            self.stdout.write("no changes: nothing to publish")
        else:
            self.stdout.write(self.style.SUCCESS(f"published version {version.number}"))

    def do_publish(self, user=None, comment="", **options):
        diff = services.pending_diff()
        try:
            version = services.publish(self._user(user), comment)
        except services.PublishError as exc:
            raise CommandError(f"not published: {exc}") from None
        if version is None:
            self.stdout.write("no changes: nothing to publish")
            return
        self._show_diff(diff)
        self.stdout.write(self.style.SUCCESS(f"published version {version.number}"))

    def do_createadmin(self, username="admin", **options):
        password = secrets.token_urlsafe(12)
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        user.groups.add(Group.objects.get_or_create(name=roles.ADMIN)[0])
        self.stdout.write(f"{'created' if created else 'reset'} administrator {username!r}")
        self.stdout.write(f"username: {username}\npassword: {password}")

    def do_trace(self, client, cookie="", vs="", as_json=False, **options):
        import redis

        from monitoring import trace as tracing  # reads the workers' Redis state; only this subcommand needs it

        try:
            address = tracing.client_address(client)
        except ValueError as exc:
            raise CommandError(f"client: {exc}") from None
        try:
            result = tracing.run(address, cookie.strip(), vs)
        except redis.RedisError as exc:
            raise CommandError(f"cannot read Redis ({exc}): the trace needs the workers' shared state") from None
        if result.problem:
            raise CommandError(result.problem)
        if as_json:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        else:
            for line in tracing.as_text(result):
                self.stdout.write(line)

    def _read(self, file):
        try:
            return Path(file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None

    def _user(self, username):
        if not username:
            return None
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"--user: no user named {username!r}") from None

    def _show_diff(self, diff):
        if not diff:
            return
        for line in diff:
            style = {"+": self.style.SUCCESS, "-": self.style.ERROR}.get(line[:1]) if line[:3] not in ("+++", "---") else None
            self.stdout.write(style(line) if style else line)
