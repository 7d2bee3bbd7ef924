"""What Horizon needs from the balancer: timeouts, ports, the health check (see shared/HORIZON.md).

Short timeouts are allowed (a lab may want them) but the console warns, naming
the reason, because they silently break tunnels in production.
"""
from dataclasses import dataclass

KB_1032661_MINIMUM = 300  # View 4/5: keep-alives every 3-4 minutes, so at least 5 minutes
HORIZON8_MINIMUM = 5400  # Horizon 8: 30-minute heartbeat, three misses end the session


def timeout_warnings(label: str, seconds: float) -> list[str]:
    if seconds < KB_1032661_MINIMUM:
        return [
            f"{label} of {seconds:g} s is under 5 minutes: Horizon tunnels will drop "
            "(VMware KB 1032661: clients send keep-alives only every 3-4 minutes). "
            f"Use at least {KB_1032661_MINIMUM} s; {HORIZON8_MINIMUM} s for Horizon 8."
        ]
    if seconds < HORIZON8_MINIMUM:
        return [
            f"{label} of {seconds:g} s is under 90 minutes: Horizon 8 clients send a heartbeat "
            "every 30 minutes and end the session after three misses (KB 56636), "
            f"so use about {HORIZON8_MINIMUM} s."
        ]
    return []


# --- what each Horizon version and role needs from the balancer (the setup wizard's rules) ---------------
#
# Sources, stated on the wizard page as well:
# - the seed article "Loadbalancer mit VMWare" (View 5): tunnel mode carries everything in HTTPS 443; bypass
#   (direct) mode adds RDP 3389, USB redirection 32111 and MMR 9427, internal only; "1 hour" for idle resources;
# - VMware KB 1032661 (View 4/5): source-IP persistence of at least 5 minutes (keep-alives every 3-4 minutes);
# - VMware KB 56636 (Horizon 8): source-IP persistence; the client heartbeat is 30 minutes and three misses end
#   the session, so persistence and idle timeouts of about 90 minutes;
# - VMware / vendor guidance for Unified Access Gateways (the three affinity methods): Blast 8443 TCP+UDP and
#   PCoIP 4172 TCP+UDP are secondary protocols that must reach the UAG that authenticated the client; a UAG
#   also serves the tunnel and Blast over TCP on 443. Port groups per UAG are 10<i>43 (tunnel and Blast)
#   and 10<i>72 (PCoIP), e.g. 10143/10172 for UAG 1, 10243/10272 for UAG 2.

HORIZON8_IDLE = HORIZON8_MINIMUM  # KB 56636: idle connections must outlive three 30-minute heartbeats
ARTICLE_IDLE = 3600  # the seed article: free a client's resources after about 1 hour


@dataclass(frozen=True)
class Version:
    key: str
    label: str
    persistence_timeout: int  # seconds
    idle_timeout: int  # seconds
    gateways: bool  # Blast 8443 TCP+UDP (Blast Secure Gateway / UAG) exists
    source: str  # where the numbers come from, shown on the page and in the checklist


VERSIONS = {
    v.key: v for v in (
        # KB 1032661 asks for at least 300 s; one hour (the article's idle figure) for both, so a client idle
        # inside its tunnel for up to an hour still finds its server when it opens the next connection.
        Version("view5", "View 5 (Security Servers)", ARTICLE_IDLE, ARTICLE_IDLE, False,
                "VMware KB 1032661 (at least 300 s persistence) and the article's 1 hour idle timeout"),
        # HORIZON.md has figures for View 4/5 and Horizon 8 only; Horizon 8's longer ones are safe for 6/7
        # (entries are refreshed by traffic, a failed server re-points its clients), and Blast arrived with 6/7.
        Version("horizon7", "Horizon 6 / 7", HORIZON8_MINIMUM, HORIZON8_IDLE, True,
                "Horizon 8's figures (KB 56636), which also cover 6/7; Blast 8443 and PCoIP 4172 gateways"),
        Version("horizon8", "Horizon 8 (2006 and later)", HORIZON8_MINIMUM, HORIZON8_IDLE, True,
                "VMware KB 56636: source-IP persistence and idle timeouts of about 90 minutes (5400 s)"),
    )
}

UAG, CONNECTION_SERVER = "uag", "connection_server"
TUNNEL, DIRECT = "tunnel", "direct"


@dataclass(frozen=True)
class Channel:
    """A secondary connection of a client: it must reach the server that authenticated it.

    server_port None = the server's own HTTPS port (the tunnel shares it). group_suffix: the last two digits
    of this channel's port in a port group (UAG i listens on 10000 + 100 * i + suffix); None = the port
    group carries it on another channel's port (a UAG serves Blast over TCP on its tunnel port 443).
    url: the External URL setting on the Horizon server that names this channel, if any.
    """

    key: str
    label: str
    server_port: int | None
    protocol: str
    group_suffix: int | None
    url: str | None = None

    def port_on(self, server_port: int) -> int:
        return self.server_port or server_port


TUNNEL_CHANNEL = Channel("tunnel", "HTTPS tunnel", None, "tcp", 43, "tunnel")
PCOIP = (Channel("pcoip-tcp", "PCoIP TCP", 4172, "tcp", 72, "pcoip"), Channel("pcoip-udp", "PCoIP UDP", 4172, "udp", 72))
# The article's bypass ports: the client goes straight to its desktop, following its 443 server.
DIRECT_CHANNELS = (
    Channel("rdp", "RDP", 3389, "tcp", None), Channel("usb", "USB redirection", 32111, "tcp", None),
    Channel("mmr", "MMR", 9427, "tcp", None),
)


def blast_channels(role: str) -> tuple[Channel, ...]:
    if role == UAG:  # a UAG serves Blast over TCP on 443 as well, so its port group needs no extra TCP port
        return (Channel("blast-tcp", "Blast TCP", 8443, "tcp", None, "blast"),
                Channel("blast-udp", "Blast UDP", 8443, "udp", 43))
    # A Connection Server's Blast Secure Gateway listens on 8443 only: its own pair of ports in a port group.
    return (Channel("blast-tcp", "Blast TCP", 8443, "tcp", 44, "blast"), Channel("blast-udp", "Blast UDP", 8443, "udp", 44))


def channels(role: str, version: Version, mode: str) -> tuple[Channel, ...]:
    """The secondary channels of one client, tunnel first (the primary 443 is not among them)."""
    if mode == DIRECT:
        return DIRECT_CHANNELS
    return (TUNNEL_CHANNEL, *(blast_channels(role) if version.gateways else ()), *PCOIP)


PORT_GROUP_BASE = 10000  # UAG i: 10000 + 100 * i + suffix, e.g. 10143 / 10172 for UAG 1
PORT_GROUP_MAX_SERVERS = 99  # 10000 + 100 * 99 + 72 = 19972, still a plain port


def port_group_port(index: int, channel: Channel) -> int:
    """The port of `channel` in the port group of server `index` (1-based)."""
    return PORT_GROUP_BASE + 100 * index + channel.group_suffix


# VMware's health check for every Horizon server (see HORIZON.md "Health").
FAVICON_CHECK = {
    "type": "https", "method": "GET", "path": "/favicon.ico", "expect_up": "200", "expect_drain": "503",
    "verify_certificate": False,  # Horizon servers often carry internal certificates
    "interval": 30.0,  # VMware asks for 30 s and at most two balancers probing each server
    "timeout": 5.0,
    "rise": 2,  # a recovered server returns after two good checks (one minute)
    # Two misses, not HAProxy's three: at VMware's 30 s interval three would leave a hung server in rotation
    # for up to 90 s. Refused connections are redispatched at once anyway; the check catches the hung ones.
    "fall": 2,
}
