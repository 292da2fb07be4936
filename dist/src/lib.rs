//! Data-parallel collectives on libtorch's own c10d: a TCPStore rendezvous
//! (rank 0 serves it, as torchrun's), `ProcessGroupGloo` for CPU tensors and
//! `ProcessGroupNCCL` for CUDA tensors, through a small C++ shim
//! (`csrc/hone_dist.cpp`).

mod ffi;

use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

use hone_crds::contract::env;
use tch::Tensor;

/// How long a rendezvous or a collective waits for the other ranks.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// File name of the NCCL plugin.
const NCCL_PLUGIN: &str = "libhone_dist_nccl.so";

/// Why a process group could not be formed or a collective failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A rendezvous variable is missing or malformed.
    #[error("{name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value ("" when unset).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The rendezvous or group creation failed (a peer never came, a timeout).
    #[error("joining the process group at {addr}:{port} as rank {rank} of {world}: {message}")]
    Init {
        /// MASTER_ADDR.
        addr: String,
        /// MASTER_PORT.
        port: u16,
        /// RANK.
        rank: usize,
        /// WORLD_SIZE.
        world: usize,
        /// libtorch's message.
        message: String,
    },
    /// A collective failed.
    #[error("{op}: {message}")]
    Collective {
        /// broadcast, all_reduce or barrier.
        op: &'static str,
        /// libtorch's message.
        message: String,
    },
}

impl DistError {
    /// A short category for the termination summary.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Env { .. } => "InvalidSpec",
            Self::Init { .. } | Self::Collective { .. } => "Distributed",
        }
    }
}

/// Where and who: the torchrun variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    /// Host of rank 0's TCPStore.
    pub addr: String,
    /// Its port.
    pub port: u16,
    /// Number of processes.
    pub world: usize,
    /// This process.
    pub rank: usize,
    /// How long to wait for the others.
    pub timeout: Duration,
}

impl Rendezvous {
    /// Reads MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK through `get`;
    /// None when WORLD_SIZE is unset or 1.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let Some(world) = get(env::WORLD_SIZE) else { return Ok(None) };
        let world = parse(env::WORLD_SIZE, &world, "not a positive integer")?;
        if world == 0 {
            return Err(DistError::Env {
                name: env::WORLD_SIZE,
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if world == 1 {
            return Ok(None);
        }
        let rank_raw = get(env::RANK).unwrap_or_default();
        let rank: usize = parse(env::RANK, &rank_raw, "not a rank (0-based integer)")?;
        if rank >= world {
            return Err(DistError::Env {
                name: env::RANK,
                value: rank_raw,
                reason: "must be below WORLD_SIZE",
            });
        }
        let addr = get(env::MASTER_ADDR).unwrap_or_default();
        if addr.is_empty() {
            return Err(DistError::Env {
                name: env::MASTER_ADDR,
                value: addr,
                reason: "rank 0's host is needed",
            });
        }
        let port_raw = get(env::MASTER_PORT).unwrap_or_default();
        let port = parse(env::MASTER_PORT, &port_raw, "not a port number")?;
        Ok(Some(Self { addr, port, world, rank, timeout: DEFAULT_TIMEOUT }))
    }
}

fn parse<T: std::str::FromStr>(
    name: &'static str,
    value: &str,
    reason: &'static str,
) -> Result<T, DistError> {
    value.trim().parse().map_err(|_| DistError::Env { name, value: value.to_owned(), reason })
}

/// A joined process group; dropping it leaves the group.
pub struct ProcessGroup {
    raw: ffi::Handle,
    rank: usize,
    world: usize,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup").field("rank", &self.rank).field("world", &self.world).finish()
    }
}

impl ProcessGroup {
    /// Joins the group the torchrun variables describe; None when
    /// WORLD_SIZE is unset or 1 (one process trains alone).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        match Rendezvous::from_vars(|name| std::env::var(name).ok())? {
            Some(rendezvous) => Self::join(&rendezvous).map(Some),
            None => Ok(None),
        }
    }

    /// Joins the group at `rendezvous`; blocks until every rank has come
    /// (or the timeout passes).
    pub fn join(rendezvous: &Rendezvous) -> Result<Self, DistError> {
        let init_err = |message: String| DistError::Init {
            addr: rendezvous.addr.clone(),
            port: rendezvous.port,
            rank: rendezvous.rank,
            world: rendezvous.world,
            message,
        };
        let addr = CString::new(rendezvous.addr.as_str()).map_err(|e| init_err(e.to_string()))?;
        let plugin = nccl_plugin()
            .and_then(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
            .unwrap_or_default();
        let world = i32::try_from(rendezvous.world).map_err(|e| init_err(e.to_string()))?;
        let rank = i32::try_from(rendezvous.rank).map_err(|e| init_err(e.to_string()))?;
        let timeout_ms = i64::try_from(rendezvous.timeout.as_millis()).unwrap_or(i64::MAX).max(1);
        let raw = ffi::init(&addr, rendezvous.port, world, rank, timeout_ms, &plugin).map_err(init_err)?;
        Ok(Self { raw, rank: rendezvous.rank, world: rendezvous.world })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Overwrites every tensor, in place, with rank 0's.
    pub fn broadcast(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        self.raw
            .broadcast(&pointers(tensors))
            .map_err(|message| DistError::Collective { op: "broadcast", message })
    }

    /// Replaces every tensor, in place, by its sum over the ranks.
    pub fn all_reduce(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        self.raw
            .all_reduce(&pointers(tensors))
            .map_err(|message| DistError::Collective { op: "all_reduce", message })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.raw.barrier().map_err(|message| DistError::Collective { op: "barrier", message })
    }
}

/// The `at::Tensor*` behind each tch tensor.
fn pointers(tensors: &[Tensor]) -> Vec<*const std::ffi::c_void> {
    tensors.iter().map(|t| t.as_ptr().cast::<std::ffi::c_void>()).collect()
}

/// Where the NCCL plugin is: `HONE_DIST_NCCL_PLUGIN`, beside the executable,
/// or where this build left it.
fn nccl_plugin() -> Option<PathBuf> {
    let beside_exe = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(NCCL_PLUGIN)));
    let built = option_env!("HONE_DIST_NCCL_PLUGIN").filter(|p| !p.is_empty()).map(PathBuf::from);
    std::env::var_os(env::DIST_NCCL_PLUGIN)
        .map(PathBuf::from)
        .into_iter()
        .chain(beside_exe)
        .chain(built)
        .find(|p| p.exists())
}

/// Whether the NCCL plugin was found (CUDA collectives need it).
pub fn nccl_available() -> bool {
    nccl_plugin().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn one_process_needs_no_group() {
        assert_eq!(Rendezvous::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(Rendezvous::from_vars(vars(&[("WORLD_SIZE", "1")])).unwrap(), None);
    }

    #[test]
    fn torchrun_variables_make_a_rendezvous() {
        let r = Rendezvous::from_vars(vars(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("MASTER_ADDR", "job-0.job"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((r.addr.as_str(), r.port, r.world, r.rank), ("job-0.job", 29500, 4, 3));
    }

    #[test]
    fn bad_variables_are_named() {
        let base = [("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "29500")];
        for (name, value) in
            [("RANK", "2"), ("RANK", "x"), ("MASTER_PORT", "70000"), ("MASTER_ADDR", ""), ("WORLD_SIZE", "0")]
        {
            let mut pairs: Vec<(&str, &str)> = base.iter().copied().filter(|(k, _)| *k != name).collect();
            pairs.push((name, value));
            let err = Rendezvous::from_vars(vars(&pairs)).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn two_ranks_in_threads_all_reduce_and_broadcast() {
        let port = free_port();
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let group = ProcessGroup::join(&Rendezvous {
                        addr: "127.0.0.1".into(),
                        port,
                        world: 2,
                        rank,
                        timeout: Duration::from_secs(60),
                    })
                    .unwrap();
                    let a = Tensor::from_slice(&[1.0f32 + rank as f32, 10.0]);
                    let b = Tensor::from_slice(&[rank as i64 * 5]);
                    group.all_reduce(&[a.shallow_clone(), b.shallow_clone()]).unwrap();
                    let c = Tensor::from_slice(&[rank as f64 + 7.0; 3]);
                    group.broadcast(&[c.shallow_clone()]).unwrap();
                    group.barrier().unwrap();
                    (
                        Vec::<f32>::try_from(&a).unwrap(),
                        i64::try_from(&b).unwrap(),
                        Vec::<f64>::try_from(&c).unwrap(),
                    )
                })
            })
            .collect();
        for handle in ranks {
            let (a, b, c) = handle.join().unwrap();
            assert_eq!(a, [3.0, 20.0]);
            assert_eq!(b, 5);
            assert_eq!(c, [7.0; 3], "rank 0's values everywhere");
        }
    }

    #[test]
    fn a_missing_peer_times_out_with_a_message() {
        let err = ProcessGroup::join(&Rendezvous {
            addr: "127.0.0.1".into(),
            port: free_port(),
            world: 2,
            rank: 0,
            timeout: Duration::from_millis(500),
        })
        .unwrap_err();
        assert!(matches!(err, DistError::Init { .. }), "{err}");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}
