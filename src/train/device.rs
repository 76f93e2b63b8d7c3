//! Which device a rank computes on: CUDA device (node-local rank mod GPUs per
//! node) when CUDA is available and allowed, else CPU.
use crate::config::DevicePref;
use tch::Device;

/// The config asks for a device this machine does not have.
#[derive(Debug, thiserror::Error)]
#[error("config key train.device = \"cuda\" but no CUDA device is available")]
pub struct NoCuda;

/// The device of the rank with node-local rank `local_rank`.
pub fn choose(pref: DevicePref, local_rank: usize) -> Result<Device, NoCuda> {
    let gpus = if tch::Cuda::is_available() {
        tch::Cuda::device_count() as usize
    } else {
        0
    };
    match pref {
        DevicePref::Cpu => Ok(Device::Cpu),
        DevicePref::Auto if gpus == 0 => Ok(Device::Cpu),
        DevicePref::Cuda if gpus == 0 => Err(NoCuda),
        DevicePref::Auto | DevicePref::Cuda => Ok(Device::Cuda(local_rank % gpus)),
    }
}

pub fn describe(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// Every rank logs the device it chose (users check GPU placement with this line).
pub fn log_choice(dist: &crate::dist::Dist, d: Device) {
    log::info!(
        "rank {}/{} on {} (node-local rank {}/{}): device {}",
        dist.rank,
        dist.size,
        dist.host,
        dist.local_rank,
        dist.local_size,
        describe(d)
    );
}
