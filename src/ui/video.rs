//! Video on the GPU: each tile's decoded I420 picture goes to three `R8Unorm`
//! textures (Y full size, U and V quarter size) and a WGSL fragment shader converts to RGB
//! (BT.601, limited range) while drawing. The CPU does no colour maths and uploads 1.5 bytes per
//! pixel instead of 4.
//!
//! The egui side only records a [`VideoCallback`] (an `Arc` of the latest decoded frame plus the
//! tile's [`TileToken`]); `prepare` uploads when the frame's `seq` differs from what the tile's
//! textures hold, and `paint` draws one triangle covering the callback rectangle. Textures live in
//! egui-wgpu's `callback_resources`, keyed by the token; when a tile is dropped its token dies and
//! the next `prepare` frees its textures (no texture leak per departed peer).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use eframe::egui;
use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, ScreenDescriptor, wgpu};

use crate::engine::api::DecodedFrame;

/// The conversion shader. The vertex stage emits one triangle that covers the viewport egui sets
/// to the callback's rectangle; the fragment stage samples the three planes.
const SHADER: &str = r#"
struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    // (0,0) (2,0) (0,2) in uv → a triangle covering the whole viewport.
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    var out: VsOut;
    out.pos = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

@group(0) @binding(0) var plane_y: texture_2d<f32>;
@group(0) @binding(1) var plane_u: texture_2d<f32>;
@group(0) @binding(2) var plane_v: texture_2d<f32>;
@group(0) @binding(3) var smp: sampler;

// BT.601 limited range ("studio swing"): Y in 16..235, Cb/Cr in 16..240, as openh264 decodes.
fn yuv_to_rgb(uv: vec2<f32>) -> vec3<f32> {
    let y = (textureSample(plane_y, smp, uv).r - 16.0 / 255.0) * (255.0 / 219.0);
    let u = (textureSample(plane_u, smp, uv).r - 128.0 / 255.0) * (255.0 / 224.0);
    let v = (textureSample(plane_v, smp, uv).r - 128.0 / 255.0) * (255.0 / 224.0);
    let r = y + 1.402 * v;
    let g = y - 0.344136 * u - 0.714136 * v;
    let b = y + 1.772 * u;
    return clamp(vec3<f32>(r, g, b), vec3<f32>(0.0), vec3<f32>(1.0));
}

// egui draws into a gamma-space target (Rgba8Unorm / Bgra8Unorm): write gamma values as they are.
@fragment
fn fs_gamma(in: VsOut) -> @location(0) vec4<f32> {
    return vec4<f32>(yuv_to_rgb(in.uv), 1.0);
}

// An sRGB-aware target encodes on write, so hand it linear values.
fn to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_srgb(in: VsOut) -> @location(0) vec4<f32> {
    return vec4<f32>(to_linear(yuv_to_rgb(in.uv)), 1.0);
}
"#;

/// Identity of one tile's GPU textures. The tile owns the only strong reference; the renderer
/// keeps a `Weak` and frees the textures once it is gone.
#[derive(Debug, Default)]
pub struct TileToken(());

impl TileToken {
    pub fn new() -> Arc<TileToken> {
        Arc::new(TileToken(()))
    }
}

/// The shared pipeline plus each tile's textures; stored in egui-wgpu's `callback_resources`.
pub struct VideoRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    tiles: HashMap<usize, TileTextures>,
    /// Uploads done so far (tests check that an unchanged frame is not uploaded again).
    pub uploads: u64,
}

struct TileTextures {
    owner: Weak<TileToken>,
    size: (u32, u32),
    seq: u64,
    planes: [wgpu::Texture; 3],
    bind_group: wgpu::BindGroup,
}

/// Installs the pipeline into a renderer's callback resources. Call once at start-up with the
/// render state eframe (or the test harness) created; `msaa` must match the egui renderer's.
///
/// Scaling filter: bilinear on a GPU; nearest on a software rasteriser (llvmpipe), where the
/// three bilinear lookups per pixel cost about a quarter of the frame time (`meshcall bench ui`:
/// 43 → 33 ms per frame with one large tile) and the picture is rarely scaled by much.
pub fn install(render_state: &egui_wgpu::RenderState, msaa: u32) {
    let software = render_state.adapter.get_info().device_type == wgpu::DeviceType::Cpu;
    let filter = if software {
        wgpu::FilterMode::Nearest
    } else {
        wgpu::FilterMode::Linear
    };
    let renderer = VideoRenderer::new(
        &render_state.device,
        render_state.target_format,
        msaa,
        filter,
    );
    render_state
        .renderer
        .write()
        .callback_resources
        .insert(renderer);
}

impl VideoRenderer {
    pub fn new(
        device: &wgpu::Device,
        target: wgpu::TextureFormat,
        msaa: u32,
        filter: wgpu::FilterMode,
    ) -> VideoRenderer {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("meshcall_yuv"),
            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(SHADER)),
        });
        let plane = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                multisampled: false,
                sample_type: wgpu::TextureSampleType::Float { filterable: true },
                view_dimension: wgpu::TextureViewDimension::D2,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("meshcall_yuv_planes"),
            entries: &[
                plane(0),
                plane(1),
                plane(2),
                wgpu::BindGroupLayoutEntry {
                    binding: 3,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("meshcall_yuv"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("meshcall_yuv"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState {
                count: msaa.max(1),
                mask: !0,
                alpha_to_coverage_enabled: false,
            },
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some(if target.is_srgb() {
                    "fs_srgb"
                } else {
                    "fs_gamma"
                }),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("meshcall_yuv"),
            mag_filter: filter,
            min_filter: filter,
            ..Default::default()
        });
        VideoRenderer {
            pipeline,
            layout,
            sampler,
            tiles: HashMap::new(),
            uploads: 0,
        }
    }

    /// Number of tiles holding textures (tests: departed tiles are freed).
    pub fn live_tiles(&self) -> usize {
        self.tiles.len()
    }

    /// Drops the textures of tiles that no longer exist.
    fn sweep(&mut self) {
        self.tiles.retain(|_, t| t.owner.strong_count() > 0);
    }

    /// Uploads `frame` for the tile unless its textures already hold this `seq`.
    fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        token: &Arc<TileToken>,
        frame: &DecodedFrame,
    ) {
        let f = &frame.frame;
        // The size comes from a peer's bitstream: a malformed picture (odd or oversized, short
        // plane) is skipped rather than trusted. Oversized matters: wgpu treats a texture
        // beyond the device limit as a validation error, which would abort the app.
        let max = device.limits().max_texture_dimension_2d as usize;
        let luma = f.width.saturating_mul(f.height);
        if f.width < 2
            || f.height < 2
            || f.width > max
            || f.height > max
            || !f.width.is_multiple_of(2)
            || !f.height.is_multiple_of(2)
            || f.y.len() < luma
            || f.u.len() < luma / 4
            || f.v.len() < luma / 4
        {
            return;
        }
        let (w, h) = (f.width as u32, f.height as u32);
        let key = Arc::as_ptr(token) as usize;
        let stale = self
            .tiles
            .get(&key)
            .is_none_or(|t| t.size != (w, h) || t.owner.strong_count() == 0);
        if stale {
            let tex = |label, w, h| {
                device.create_texture(&wgpu::TextureDescriptor {
                    label: Some(label),
                    size: wgpu::Extent3d {
                        width: w,
                        height: h,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::R8Unorm,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                })
            };
            let planes = [
                tex("meshcall_y", w, h),
                tex("meshcall_u", w / 2, h / 2),
                tex("meshcall_v", w / 2, h / 2),
            ];
            let views: Vec<wgpu::TextureView> = planes
                .iter()
                .map(|t| t.create_view(&wgpu::TextureViewDescriptor::default()))
                .collect();
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("meshcall_yuv_tile"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::TextureView(&views[0]),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&views[1]),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&views[2]),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::Sampler(&self.sampler),
                    },
                ],
            });
            self.tiles.insert(
                key,
                TileTextures {
                    owner: Arc::downgrade(token),
                    size: (w, h),
                    // No frame has seq u64::MAX before wrapping; forces the first upload.
                    seq: u64::MAX,
                    planes,
                    bind_group,
                },
            );
        }
        let Some(t) = self.tiles.get_mut(&key) else {
            return;
        };
        if t.seq == frame.seq {
            return;
        }
        let put = |tex: &wgpu::Texture, data: &[u8], w: u32, h: u32| {
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: tex,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                &data[..w as usize * h as usize],
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(w),
                    rows_per_image: Some(h),
                },
                wgpu::Extent3d {
                    width: w,
                    height: h,
                    depth_or_array_layers: 1,
                },
            );
        };
        put(&t.planes[0], &f.y, w, h);
        put(&t.planes[1], &f.u, w / 2, h / 2);
        put(&t.planes[2], &f.v, w / 2, h / 2);
        t.seq = frame.seq;
        self.uploads += 1;
    }
}

/// One tile's draw for this egui frame.
pub struct VideoCallback {
    pub token: Arc<TileToken>,
    pub frame: Arc<DecodedFrame>,
}

impl CallbackTrait for VideoCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(r) = resources.get_mut::<VideoRenderer>() {
            r.sweep();
            r.upload(device, queue, &self.token, &self.frame);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(r) = resources.get::<VideoRenderer>() else {
            return;
        };
        let Some(t) = r.tiles.get(&(Arc::as_ptr(&self.token) as usize)) else {
            return;
        };
        if t.seq == u64::MAX {
            return;
        }
        pass.set_pipeline(&r.pipeline);
        pass.set_bind_group(0, &t.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// Adds the draw of `frame` into `rect` to the painter.
pub fn paint_video(
    painter: &egui::Painter,
    rect: egui::Rect,
    token: &Arc<TileToken>,
    frame: Arc<DecodedFrame>,
) {
    painter.add(egui_wgpu::Callback::new_paint_callback(
        rect,
        VideoCallback {
            token: token.clone(),
            frame,
        },
    ));
}

/// BT.601 limited-range YUV → RGB on the CPU, the same maths as the shader. Only tests use it:
/// they compare rendered pixels with it.
pub fn bt601_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let y = (f32::from(y) - 16.0) * (255.0 / 219.0);
    let u = (f32::from(u) - 128.0) * (255.0 / 224.0);
    let v = (f32::from(v) - 128.0) * (255.0 / 224.0);
    let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [
        c(y + 1.402 * v),
        c(y - 0.344_136 * u - 0.714_136 * v),
        c(y + 1.772 * u),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bt601_reference_points() {
        assert_eq!(bt601_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(bt601_to_rgb(235, 128, 128), [255, 255, 255]);
        // Studio-swing red, green and blue primaries.
        let close = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2);
        assert!(close(bt601_to_rgb(81, 90, 240), [255, 0, 0]));
        assert!(close(bt601_to_rgb(145, 54, 34), [0, 255, 0]));
        assert!(close(bt601_to_rgb(41, 240, 110), [0, 0, 255]));
    }

    #[test]
    fn tokens_have_distinct_identities() {
        let a = TileToken::new();
        let b = TileToken::new();
        assert_ne!(Arc::as_ptr(&a), Arc::as_ptr(&b));
    }
}
