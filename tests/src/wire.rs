//! A client that speaks kmsp11's wire protocol itself, as an attacker with
//! a valid certificate would: no libkmsp11, any frame it likes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kmsp11_proto::frame::{self, FrameHeader};
use kmsp11_proto::{
    Body, Envelope, Hello, HelloOk, Pin, Request, Response, FRAME_HEADER_LEN, PROTOCOL_VERSION,
};
use rustls::pki_types::ServerName;

use crate::raw::{rv_name, CKF_SERIAL_SESSION, CKU_USER, CK_RV};
use crate::Kmsd;

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub struct Wire {
    pub s: Tls,
    next_id: u64,
}

/// The dev CA, and a client certificate and key of the dev folder (`client`, `stranger`, ...).
pub fn tls_config(dir: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    let names = ["ca", "cert", "key"];
    let ca = dir.join("ca.pem");
    Arc::new(kmsp11_proto::tls::client_config(&ca, cert, key, names).unwrap())
}

impl Wire {
    /// A TLS connection with the dev client certificate, before Hello.
    pub fn connect(kmsd: &Kmsd) -> Wire {
        Wire::connect_as(
            kmsd,
            &kmsd.dir.join("client.pem"),
            &kmsd.dir.join("client.key"),
        )
    }

    pub fn connect_as(kmsd: &Kmsd, cert: &Path, key: &Path) -> Wire {
        Wire::try_connect_as(kmsd, cert, key).expect("TLS connection")
    }

    /// A TLS connection, or the handshake's error.
    pub fn try_connect_as(kmsd: &Kmsd, cert: &Path, key: &Path) -> std::io::Result<Wire> {
        let cfg = tls_config(&kmsd.dir, cert, key);
        let conn =
            rustls::ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        let tcp = TcpStream::connect(&kmsd.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(Wire { s, next_id: 1 })
    }

    /// A Hello that opens (or rejoins) a context; panics if refused.
    pub fn hello(&mut self, rejoin: Option<Vec<u8>>) -> HelloOk {
        match self.try_hello(rejoin) {
            Some(ok) => ok,
            None => panic!("Hello refused"),
        }
    }

    /// A Hello; `None` if kmsd closed the connection instead of answering.
    pub fn try_hello(&mut self, rejoin: Option<Vec<u8>>) -> Option<HelloOk> {
        let r = self.send(Envelope {
            id: 0,
            resend: false,
            request: Request::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                rejoin,
                pid: std::process::id(),
            }),
        })?;
        match r.body {
            Body::HelloOk(ok) => Some(ok),
            _ => None,
        }
    }

    /// One request with the next id; panics if the connection closed.
    pub fn call(&mut self, request: Request) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        self.call_with(id, false, request)
            .expect("kmsd closed the connection")
    }

    /// C_OpenSession on `slot` with `flags` (serial implied); panics on failure.
    pub fn open_session(&mut self, slot: u64, flags: u64) -> u64 {
        let r = self.call(Request::OpenSession(kmsp11_proto::OpenSession {
            slot,
            flags: flags | CKF_SERIAL_SESSION,
        }));
        handle(r)
    }

    /// C_Login as the user with `pin`: its CK_RV.
    pub fn login(&mut self, session: u64, pin: &str) -> CK_RV {
        let pin = Some(Pin::new(pin.as_bytes().to_vec()));
        let login = kmsp11_proto::Login {
            session,
            user_type: CKU_USER,
            pin,
        };
        self.call(Request::Login(login)).rv
    }

    /// C_Logout: its CK_RV.
    pub fn logout(&mut self, session: u64) -> CK_RV {
        let op = kmsp11_proto::SessionOnly { session };
        self.call(Request::Logout(op)).rv
    }

    /// One request with the given id and resend flag; `None` if closed.
    pub fn call_with(&mut self, id: u64, resend: bool, request: Request) -> Option<Response> {
        self.send(Envelope {
            id,
            resend,
            request,
        })
    }

    fn send(&mut self, env: Envelope) -> Option<Response> {
        let bytes = frame::frame(&kmsp11_proto::encode(&env).unwrap()).unwrap();
        self.s.write_all(&bytes).ok()?;
        self.s.flush().ok()?;
        self.read_response()
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
        let _ = self.s.flush();
    }

    /// Sends a frame whose payload is `payload`.
    pub fn send_payload(&mut self, payload: &[u8]) {
        let mut f = FrameHeader::new(payload.len()).unwrap().to_bytes().to_vec();
        f.extend_from_slice(payload);
        self.send_raw(&f);
    }

    pub fn read_response(&mut self) -> Option<Response> {
        let mut h = [0u8; FRAME_HEADER_LEN];
        self.s.read_exact(&mut h).ok()?;
        let header = FrameHeader::parse(&h).ok()?;
        let mut p = vec![0u8; header.len as usize];
        self.s.read_exact(&mut p).ok()?;
        kmsp11_proto::decode(&p).ok()
    }

    /// True if kmsd closes the connection (EOF, reset or alert) without sending a frame.
    pub fn closed_without_answer(&mut self) -> bool {
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            if all.len() > 1 << 16 {
                return false;
            }
        }
        !all.windows(4).any(|w| w == frame::MAGIC)
    }
}

/// Opens a TCP connection from a given local address (any of 127/8) that never speaks.
/// The handle a call answered; panics, naming the CK_RV, otherwise.
pub fn handle(r: Response) -> u64 {
    match r.body {
        Body::Handle(h) => h,
        _ => panic!("expected a handle, got {} {:?}", rv_name(r.rv), r.body),
    }
}

pub fn silent_tcp(from: &str, to: &str) -> std::io::Result<TcpStream> {
    let to: SocketAddr = to.parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(sock.into())
}
