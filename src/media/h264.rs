//! H.264 constrained baseline through openh264 (bundled source, built with nasm).
//!
//! The encoder emits Annex-B access units; a keyframe can be forced (PLI/FIR, a new peer). The
//! decoder takes Annex-B access units and returns packed I420 frames. Both are plain CPU objects:
//! callers run them on a worker thread, never on the UI or network tasks.

use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, RateControlMode, UsageType,
};
use openh264::formats::YUVSource;

use super::MediaError;
use super::frame::I420Frame;

/// The fmtp every H.264 track of ours is negotiated with.
pub const FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

#[derive(Debug, Clone, Copy)]
pub struct EncoderSettings {
    pub bitrate_bps: u32,
    pub fps: f32,
}

impl Default for EncoderSettings {
    fn default() -> Self {
        EncoderSettings {
            bitrate_bps: 1_500_000,
            fps: 30.0,
        }
    }
}

pub struct H264Encoder {
    inner: Encoder,
    force_key: bool,
    bitrate_bps: u32,
}

/// One encoded access unit.
#[derive(Debug, Clone)]
pub struct EncodedAu {
    /// Annex-B bytes; empty when the rate control skipped the frame.
    pub data: Vec<u8>,
    /// An IDR (a receiver can start decoding here).
    pub keyframe: bool,
}

fn h264_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::H264(e.to_string())
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<H264Encoder, MediaError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            // Real-time calls: the cheapest search, no background/scene analysis. Measured in
            // `meshcall bench media` (docs/BENCHMARKS.md): the CPU matters more than the last
            // dB here, where one core encodes while others decode.
            .complexity(Complexity::Low)
            .background_detection(false)
            .scene_change_detect(false);
        let inner =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(h264_err)?;
        // The first frame is a keyframe anyway; asking again is harmless.
        Ok(H264Encoder {
            inner,
            force_key: true,
            bitrate_bps: settings.bitrate_bps,
        })
    }

    /// The rate control's current target.
    pub fn bitrate_bps(&self) -> u32 {
        self.bitrate_bps
    }

    /// Retargets the rate control without a new keyframe (bitrate adaptation).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), MediaError> {
        let bps = bps.clamp(50_000, 20_000_000);
        if bps == self.bitrate_bps {
            return Ok(());
        }
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: bps as i32,
        };
        // SAFETY: the encoder is initialised (constructed by `with_api_config`), and
        // ENCODER_OPTION_BITRATE takes a pointer to an SBitrateInfo that outlives the call. The
        // option only retargets rate control; it changes nothing the wrapper relies on.
        let rc = unsafe {
            self.inner.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                (&mut info as *mut openh264_sys2::SBitrateInfo).cast(),
            )
        };
        if rc != 0 {
            return Err(MediaError::H264(format!("set bitrate failed ({rc})")));
        }
        self.bitrate_bps = bps;
        Ok(())
    }

    /// The next encoded frame to produce is a keyframe (PLI/FIR from a receiver, a new peer).
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Encodes one frame into an Annex-B access unit (empty when the rate control skipped it).
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Vec<u8>, MediaError> {
        self.encode_au(frame).map(|au| au.data)
    }

    /// [`Self::encode`] that also says whether the unit is a keyframe.
    pub fn encode_au(&mut self, frame: &I420Frame) -> Result<EncodedAu, MediaError> {
        if std::mem::take(&mut self.force_key) {
            self.inner.force_intra_frame();
        }
        let bitstream = self.inner.encode(frame).map_err(h264_err)?;
        let keyframe = matches!(bitstream.frame_type(), openh264::encoder::FrameType::IDR);
        Ok(EncodedAu {
            data: bitstream.to_vec(),
            keyframe,
        })
    }
}

pub struct H264Decoder {
    inner: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<H264Decoder, MediaError> {
        Ok(H264Decoder {
            inner: Decoder::new().map_err(h264_err)?,
        })
    }

    /// Decodes one Annex-B access unit. `Ok(None)` when it produced no picture (parameter sets
    /// only, or the decoder needs more data); a corrupt unit is an error, not a panic — the
    /// caller asks the sender for a keyframe.
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<I420Frame>, MediaError> {
        match self.inner.decode(access_unit).map_err(h264_err)? {
            None => Ok(None),
            Some(yuv) => {
                let (w, h) = yuv.dimensions();
                I420Frame::from_planes(w, h, (yuv.y(), yuv.u(), yuv.v()), yuv.strides()).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::psnr;
    use crate::media::stamp;
    use crate::media::synthetic::SyntheticVideo;

    /// 60 frames of the synthetic pattern through the real encoder and decoder: every stamp reads
    /// back exactly and the luma PSNR stays above the bound.
    fn round_trip(width: usize, height: usize, bitrate: u32, min_psnr: f64) {
        let mut src = SyntheticVideo::new(width, height).expect("source");
        let mut enc = H264Encoder::new(EncoderSettings {
            bitrate_bps: bitrate,
            fps: 30.0,
        })
        .expect("encoder");
        let mut dec = H264Decoder::new().expect("decoder");
        let mut decoded = 0;
        let mut worst = f64::INFINITY;
        let mut bytes = 0;
        for i in 0..60u64 {
            let frame = src.next_frame(i * 33_333);
            let au = enc.encode(&frame).expect("encode");
            bytes += au.len();
            if au.is_empty() {
                continue;
            }
            if let Some(out) = dec.decode(&au).expect("decode") {
                assert_eq!((out.width, out.height), (width, height));
                let s = stamp::read(&out).expect("stamp survives H.264");
                assert_eq!(u64::from(s.frame), i);
                assert_eq!(s.capture_us, i * 33_333);
                worst = worst.min(psnr(&frame.y, &out.y));
                decoded += 1;
            }
        }
        assert!(decoded >= 57, "{decoded}/60 decoded at {width}x{height}");
        assert!(
            worst > min_psnr,
            "worst luma PSNR {worst:.1} dB at {width}x{height}"
        );
        println!(
            "{width}x{height}: {decoded}/60 decoded, worst PSNR {worst:.1} dB, {} kB",
            bytes / 1000
        );
    }

    #[test]
    fn vga_round_trip_keeps_stamps_and_quality() {
        round_trip(640, 480, 1_000_000, 30.0);
    }

    #[test]
    fn hd_round_trip_keeps_stamps_and_quality() {
        round_trip(1280, 720, 2_500_000, 30.0);
    }

    #[test]
    fn bitrate_can_be_retargeted_while_encoding() {
        let mut src = SyntheticVideo::new(640, 480).expect("source");
        let mut enc = H264Encoder::new(EncoderSettings {
            bitrate_bps: 2_000_000,
            fps: 30.0,
        })
        .expect("encoder");
        let mut bytes = |enc: &mut H264Encoder, from: u64| -> usize {
            (from..from + 60)
                .map(|i| {
                    let mut f = src.next_frame(i * 33_333);
                    // camera-like noise so the rate control has something to spend bits on
                    for (k, p) in f.y.iter_mut().enumerate() {
                        *p = p.wrapping_add(((k as u64 * 7919 + i * 104_729) % 23) as u8);
                    }
                    enc.encode(&f).expect("encode").len()
                })
                .sum()
        };
        let high = bytes(&mut enc, 0);
        enc.set_bitrate(200_000).expect("retarget");
        assert_eq!(enc.bitrate_bps(), 200_000);
        let _settle = bytes(&mut enc, 60);
        let low = bytes(&mut enc, 120);
        assert!(low * 3 < high, "2 Mbit/s: {high} B, 200 kbit/s: {low} B");
    }

    #[test]
    fn keyframe_on_request_and_garbage_input_is_an_error() {
        let mut src = SyntheticVideo::new(640, 480).expect("source");
        let mut enc = H264Encoder::new(EncoderSettings::default()).expect("encoder");
        let first = enc.encode(&src.next_frame(0)).expect("encode");
        let second = enc.encode(&src.next_frame(1)).expect("encode");
        enc.request_keyframe();
        let third_au = enc.encode_au(&src.next_frame(2)).expect("encode");
        assert!(third_au.keyframe);
        let third = third_au.data;
        // An IDR access unit is far larger than a P-frame of a slowly moving pattern.
        assert!(
            third.len() > second.len() * 2,
            "{} vs {}",
            third.len(),
            second.len()
        );
        assert!(first.len() > second.len() * 2);
        // A decoder that starts on a keyframe decodes it; garbage never panics.
        let mut dec = H264Decoder::new().expect("decoder");
        assert!(dec.decode(&third).expect("decode").is_some());
        let mut fresh = H264Decoder::new().expect("decoder");
        let _ = fresh.decode(&[0, 0, 0, 1, 0x65, 0xff, 0x00, 0x13]);
        let _ = fresh.decode(&[1, 2, 3]);
    }

    mod property {
        use super::super::*;
        use crate::media::synthetic::SyntheticVideo;
        use proptest::prelude::*;

        fn real_stream() -> Vec<Vec<u8>> {
            let mut src = SyntheticVideo::new(160, 120).expect("src");
            let mut enc = H264Encoder::new(EncoderSettings::default()).expect("enc");
            (0..4)
                .map(|i| enc.encode(&src.next_frame(i)).expect("encode"))
                .filter(|au| !au.is_empty())
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// Real encoder output with bytes flipped, cut or inserted, then random bytes: the
            /// decoder wrapper returns frames or errors, never panics, and keeps decoding the
            /// unmodified stream afterwards.
            #[test]
            fn mutated_bitstreams_never_panic_and_the_decoder_recovers(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
                cut in any::<prop::sample::Index>(),
                noise in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let stream = real_stream();
                let mut dec = H264Decoder::new().expect("decoder");
                for au in &stream {
                    let mut bad = au.clone();
                    for (at, byte, op) in &edits {
                        if bad.is_empty() {
                            break;
                        }
                        let i = at.index(bad.len());
                        match op {
                            0 => bad[i] ^= byte | 1,
                            1 => bad.insert(i, *byte),
                            _ => {
                                bad.remove(i);
                            }
                        }
                    }
                    let keep = cut.index(bad.len().max(1));
                    bad.truncate(keep.max(1));
                    let _ = dec.decode(&bad);
                }
                let _ = dec.decode(&noise);
                // The same decoder decodes the clean stream again from its keyframe.
                let mut decoded = 0;
                for au in &stream {
                    if let Ok(Some(_)) = dec.decode(au) {
                        decoded += 1;
                    }
                }
                prop_assert!(decoded > 0);
            }
        }
    }
}
