//! Headless Chromium (Debian `chromium`): a page's screenshot, its DOM after load, and what
//! it wrote to the console.

use std::path::Path;
use std::process::Command;

use super::tool;

/// What Chromium made of a page.
pub struct Rendered {
    /// The DOM after load, serialized.
    pub dom: String,
    /// Console messages the page logged (`CONSOLE` lines of Chromium's log).
    pub console: Vec<String>,
    /// The screenshot's size and pixels (RGBA, row by row).
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Rendered {
    /// Share of pixels that are not (near) white.
    pub fn inked(&self) -> f64 {
        let px = self.rgba.chunks_exact(4);
        let n = px.len().max(1);
        let inked = px
            .filter(|p| p[0] < 235 || p[1] < 235 || p[2] < 235)
            .count();
        inked as f64 / n as f64
    }

    /// Pixels within `tolerance` of `rgb` on every channel.
    pub fn pixels_near(&self, rgb: [u8; 3], tolerance: u8) -> usize {
        self.rgba
            .chunks_exact(4)
            .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= tolerance))
            .count()
    }
}

fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    let bin = tool("CHROMIUM", "chromium", &[]);
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// Opens the file `html` (no network needed) in headless Chromium at `width` × `height`,
/// keeps the screenshot at `png`, and returns the DOM, the console and the pixels.
pub fn render(html: &Path, png: &Path, width: u32, height: u32) -> Rendered {
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let profile = png.with_extension("chromium-profile");
    let _ = std::fs::remove_file(png);
    let shot = chromium(
        &[
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", png.display()),
            &url,
        ],
        &profile,
    );
    let log = String::from_utf8_lossy(&shot.stderr).into_owned();
    assert!(
        shot.status.success() && png.is_file(),
        "chromium did not take the screenshot ({}): {log}",
        shot.status
    );
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let dump = chromium(&["--dump-dom", &url], &profile);
    assert!(
        dump.status.success(),
        "chromium --dump-dom: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let _ = std::fs::remove_dir_all(&profile);

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    buf.truncate(info.buffer_size());
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    Rendered {
        dom: String::from_utf8_lossy(&dump.stdout).into_owned(),
        console,
        width: info.width,
        height: info.height,
        rgba,
    }
}
