"""System checks (`manage.py check`, also run by migrate): configuration the console cannot work without."""
from django.conf import settings
from django.core import checks

from proxyworker import tlsconf


@checks.register(checks.Tags.security)
def cert_key_is_a_fernet_key(app_configs, **kwargs):
    """A wrong VIEWLB_CERT_KEY would only show when the first certificate is uploaded or loaded."""
    try:
        tlsconf.cert_key_from_env({tlsconf.ENV_KEY: settings.VIEWLB_CERT_KEY})
    except tlsconf.CertificateError as exc:
        return [checks.Error(str(exc), id="viewlb.E001")]
    return []
