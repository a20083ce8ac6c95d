//! CPE names for the products [`super::identify`] names: one table of product → vendor and
//! product part of a CPE 2.2 URI, as the NVD's dictionary spells them.

use super::Identity;

/// Products as [`Identity::product`] spells them, and the `vendor:product` of their CPE.
const CPE_NAMES: &[(&str, &str)] = &[
    ("OpenSSH", "openbsd:openssh"),
    ("dropbear", "dropbear_ssh_project:dropbear_ssh"),
    ("nginx", "f5:nginx"),
    ("Apache", "apache:http_server"),
    ("lighttpd", "lighttpd:lighttpd"),
    ("Squid", "squid-cache:squid"),
    ("tinyproxy", "tinyproxy_project:tinyproxy"),
    ("HAProxy", "haproxy:haproxy"),
    ("Caddy", "caddyserver:caddy"),
    ("Kubernetes", "kubernetes:kubernetes"),
    ("Traefik", "traefik:traefik"),
    ("CUPS", "apple:cups"),
    ("Postfix", "postfix:postfix"),
    ("Exim", "exim:exim"),
    ("Sendmail", "sendmail:sendmail"),
    ("OpenSMTPD", "openbsd:opensmtpd"),
    ("vsFTPd", "beasts:vsftpd"),
    ("ProFTPD", "proftpd:proftpd"),
    ("Pure-FTPd", "pureftpd:pure-ftpd"),
    ("Dovecot", "dovecot:dovecot"),
    ("Cyrus", "cmu:cyrus_imap_server"),
    ("INN", "isc:inn"),
    ("Leafnode", "leafnode:leafnode"),
    ("Redis", "redis:redis"),
    ("memcached", "memcached:memcached"),
    ("MySQL", "mysql:mysql"),
    ("MariaDB", "mariadb:mariadb"),
    ("PostgreSQL", "postgresql:postgresql"),
    ("PgBouncer", "pgbouncer:pgbouncer"),
    ("MongoDB", "mongodb:mongodb"),
    ("NATS", "linuxfoundation:nats-server"),
    ("RabbitMQ", "vmware:rabbitmq"),
    ("Subversion", "apache:subversion"),
    ("ngIRCd", "ngircd:ngircd"),
    ("UnrealIRCd", "unrealircd:unrealircd"),
    ("InspIRCd", "inspircd:inspircd"),
    ("git", "git-scm:git"),
    ("Zookeeper", "apache:zookeeper"),
    ("Elasticsearch", "elastic:elasticsearch"),
    ("OpenSearch", "amazon:opensearch"),
    ("etcd", "etcd:etcd"),
    ("Docker", "docker:engine"),
    ("containerd", "linuxfoundation:containerd"),
    ("ISC BIND", "isc:bind"),
    ("dnsmasq", "thekelleys:dnsmasq"),
    ("Samba", "samba:samba"),
    ("OpenLDAP", "openldap:openldap"),
    ("389 Directory Server", "fedoraproject:389_directory_server"),
    ("Microsoft SQL Server", "microsoft:sql_server"),
    ("mosquitto", "eclipse:mosquitto"),
    ("xrdp", "neutrinolabs:xrdp"),
    ("kamailio", "kamailio:kamailio"),
    ("VLC rtspd", "videolan:vlc_media_player"),
    ("VLC", "videolan:vlc_media_player"),
];

/// `id` with its CPE, when its product is in [`CPE_NAMES`]: the version is appended when it
/// is known, lower-cased as CPE names are.
pub(super) fn with_cpe(mut id: Identity) -> Identity {
    let Some(product) = id.product.as_deref() else {
        return id;
    };
    let Some(&(_, name)) = CPE_NAMES.iter().find(|(p, _)| *p == product) else {
        return id;
    };
    id.cpe = Some(match &id.version {
        Some(v) => format!("cpe:/a:{name}:{}", v.to_ascii_lowercase()),
        None => format!("cpe:/a:{name}"),
    });
    id
}
