//! TLS 1.3 session tickets kept for the API server, enough of them for a class starting at once.
//!
//! Every console is its own TLS connection to the API server, and a resumed handshake skips the
//! certificate chain. rustls' own store keeps at most 8 tickets per server and a ticket is used
//! once, so with more than 8 dials in flight the rest start full handshakes (a third of all
//! handshakes at 16 concurrent set-ups, measured). Go's servers (kube-apiserver) send one
//! ticket per connection: a pool as deep as the dials in flight stays full.
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

/// Tickets kept per server: a few hundred bytes each, so at most about 256 KiB per API server.
pub(crate) const TICKETS_PER_SERVER: usize = 512;

#[derive(Default)]
struct ServerTickets {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// A [`ClientSessionStore`] with room for [`TICKETS_PER_SERVER`] TLS 1.3 tickets per server,
/// newest used first.
#[derive(Default)]
pub(crate) struct TicketStore {
    servers: Mutex<HashMap<ServerName<'static>, ServerTickets>>,
}

impl TicketStore {
    fn with_server<R>(
        &self,
        server_name: &ServerName<'_>,
        edit: impl FnOnce(&mut ServerTickets) -> R,
    ) -> R {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        edit(servers.entry(server_name.to_owned()).or_default())
    }
}

impl std::fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let tickets: usize = servers.values().map(|server| server.tls13.len()).sum();
        f.debug_struct("TicketStore")
            .field("servers", &servers.len())
            .field("tls13_tickets", &tickets)
            .finish()
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with_server(&server_name, |server| server.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with_server(server_name, |server| server.kx_hint)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with_server(&server_name, |server| server.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with_server(server_name, |server| server.tls12.clone())
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with_server(server_name, |server| server.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with_server(&server_name, |server| {
            if server.tls13.len() >= TICKETS_PER_SERVER {
                server.tls13.pop_front();
            }
            server.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.with_server(server_name, |server| server.tls13.pop_back())
    }
}
