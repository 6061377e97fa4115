// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The status codes of virtio-snd (`VIRTIO_SND_S_*`): what a control request or an I/O
//! message comes back with. The PCM state machine answers with these, not with bare numbers.

use vdaq_proto::virtio_snd::code;

/// A virtio-snd status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Status {
    /// `VIRTIO_SND_S_OK`: success.
    #[error("VIRTIO_SND_S_OK")]
    Ok,
    /// `VIRTIO_SND_S_BAD_MSG`: a malformed request, or one not valid in the stream's state.
    #[error("VIRTIO_SND_S_BAD_MSG")]
    BadMsg,
    /// `VIRTIO_SND_S_NOT_SUPP`: a valid request the device does not support.
    #[error("VIRTIO_SND_S_NOT_SUPP")]
    NotSupp,
    /// `VIRTIO_SND_S_IO_ERR`: an I/O error.
    #[error("VIRTIO_SND_S_IO_ERR")]
    IoErr,
}

/// A number that is no virtio-snd status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:#x} is not a virtio-snd status")]
pub struct UnknownStatus(pub u32);

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 4] = [Self::Ok, Self::BadMsg, Self::NotSupp, Self::IoErr];
}

impl From<Status> for u32 {
    fn from(s: Status) -> u32 {
        match s {
            Status::Ok => code::S_OK,
            Status::BadMsg => code::S_BAD_MSG,
            Status::NotSupp => code::S_NOT_SUPP,
            Status::IoErr => code::S_IO_ERR,
        }
    }
}

impl TryFrom<u32> for Status {
    type Error = UnknownStatus;

    fn try_from(n: u32) -> Result<Self, UnknownStatus> {
        Self::ALL.into_iter().find(|&s| u32::from(s) == n).ok_or(UnknownStatus(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_others_are_refused() {
        for s in Status::ALL {
            assert_eq!(Status::try_from(u32::from(s)), Ok(s));
        }
        assert_eq!(u32::from(Status::Ok), 0x8000);
        assert_eq!(u32::from(Status::BadMsg), 0x8001);
        assert_eq!(u32::from(Status::NotSupp), 0x8002);
        assert_eq!(u32::from(Status::IoErr), 0x8003);
        for n in [0, 0x7fff, 0x8004, u32::MAX] {
            assert_eq!(Status::try_from(n), Err(UnknownStatus(n)));
        }
        assert_eq!(UnknownStatus(0x1234).to_string(), "0x1234 is not a virtio-snd status");
        assert_eq!(Status::NotSupp.to_string(), "VIRTIO_SND_S_NOT_SUPP");
    }
}
