//! Text drawn with ab_glyph straight onto the bitmap.
//!
//! plotters 0.3.7's own ab_glyph text path drops each glyph's left side bearing and
//! truncates the pen position per glyph, which leaves letters like "P" or "l" touching
//! their neighbours ("C PUs", "l og"). Laying glyphs out here, at their real positions,
//! gives evenly spaced text; plotters still draws every shape.

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::results::Error;

static REGULAR: &[u8] = include_bytes!(env!("CHARTS_FONT_REGULAR"));
static BOLD: &[u8] = include_bytes!(env!("CHARTS_FONT_BOLD"));

pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
pub type DrawResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H {
    Left,
    Center,
    Right,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V {
    Top,
    Middle,
    Bottom,
}

#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Pixel height of the font's ascent-to-descent span.
    pub size: f32,
    pub bold: bool,
    pub colour: RGBColor,
}

impl Style {
    pub fn new(size: f32, colour: RGBColor) -> Style {
        Style {
            size,
            bold: false,
            colour,
        }
    }

    pub fn bold(self) -> Style {
        Style { bold: true, ..self }
    }
}

/// The embedded DejaVu Sans faces.
pub struct Fonts {
    regular: FontRef<'static>,
    bold: FontRef<'static>,
}

impl Fonts {
    pub fn load() -> Result<Fonts, Error> {
        let parse = |bytes: &'static [u8], path: &str| {
            FontRef::try_from_slice(bytes)
                .map_err(|e| Error(format!("the font embedded from {path} is unusable: {e}")))
        };
        Ok(Fonts {
            regular: parse(REGULAR, env!("CHARTS_FONT_REGULAR"))?,
            bold: parse(BOLD, env!("CHARTS_FONT_BOLD"))?,
        })
    }

    fn face(&self, style: &Style) -> &FontRef<'static> {
        if style.bold {
            &self.bold
        } else {
            &self.regular
        }
    }

    /// Each glyph with its pen position along the line, and the line's advance width.
    fn layout(&self, s: &str, style: &Style) -> (Vec<(GlyphId, f32)>, f32) {
        let font = self.face(style).as_scaled(PxScale::from(style.size));
        let mut caret = 0.0;
        let mut prev: Option<GlyphId> = None;
        let mut glyphs = Vec::with_capacity(s.len());
        for c in s.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            glyphs.push((id, caret));
            caret += font.h_advance(id);
            prev = Some(id);
        }
        (glyphs, caret)
    }

    /// Width in pixels of `s` set in `style`.
    pub fn width(&self, s: &str, style: &Style) -> f32 {
        self.layout(s, style).1
    }

    /// `style`, made smaller (down to `min_size`) until `s` is at most `max_width` wide.
    pub fn shrink_to_fit(&self, s: &str, style: Style, max_width: f32, min_size: f32) -> Style {
        let mut style = style;
        while style.size > min_size && self.width(s, &style) > max_width {
            style.size = (style.size - 0.5).max(min_size);
        }
        style
    }

    /// `s`, cut short with "…" when it is wider than `max_width`.
    pub fn ellipsize(&self, s: &str, style: &Style, max_width: f32) -> String {
        if self.width(s, style) <= max_width {
            return s.to_string();
        }
        let mut chars: Vec<char> = s.chars().collect();
        while !chars.is_empty() {
            chars.pop();
            let cut: String = chars.iter().collect::<String>().trim_end().to_string() + "…";
            if self.width(&cut, style) <= max_width {
                return cut;
            }
        }
        "…".to_string()
    }

    /// Draws `s` anchored at `at` (absolute pixels of `area`); `vertical` turns it a
    /// quarter turn anticlockwise, to read bottom to top, anchored the same way along
    /// its own direction.
    pub fn draw(
        &self,
        area: &Area<'_>,
        s: &str,
        at: (i32, i32),
        style: &Style,
        (h, v): (H, V),
        vertical: bool,
    ) -> DrawResult {
        let font = self.face(style).as_scaled(PxScale::from(style.size));
        let (glyphs, width) = self.layout(s, style);
        let x0 = match h {
            H::Left => 0.0,
            H::Center => -width / 2.0,
            H::Right => -width,
        };
        let baseline = match v {
            V::Top => font.ascent(),
            V::Middle => (font.ascent() + font.descent()) / 2.0,
            V::Bottom => font.descent(),
        };
        for (id, caret) in glyphs {
            let glyph = id.with_scale_and_position(style.size, point(x0 + caret, baseline));
            let Some(outlined) = font.outline_glyph(glyph) else {
                continue; // a space
            };
            let b = outlined.px_bounds();
            let mut result = Ok(());
            outlined.draw(|gx, gy, coverage| {
                if coverage <= 0.0 || result.is_err() {
                    return;
                }
                // Line-local pixel: x along the text, y down from the anchor.
                let (lx, ly) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                let (px, py) = if vertical {
                    (at.0 + ly, at.1 - lx)
                } else {
                    (at.0 + lx, at.1 + ly)
                };
                let colour = style.colour.mix(f64::from(coverage.min(1.0)));
                result = area.draw_pixel((px, py), &colour);
            });
            result?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fonts_load_and_measure() {
        let fonts = Fonts::load().unwrap();
        let style = Style::new(16.0, BLACK);
        let w = fonts.width("kpipe", &style);
        assert!(w > 20.0 && w < 80.0, "{w}");
        assert!(fonts.width("kpipe", &style.bold()) > w);
        assert_eq!(fonts.width("", &style), 0.0);
        let small = fonts.shrink_to_fit("kafka-go (sent 15k/s)", style, 100.0, 8.0);
        assert!(small.size < 16.0 && fonts.width("kafka-go (sent 15k/s)", &small) <= 100.0);
        let cut = fonts.ellipsize("a long footer line that cannot fit", &style, 120.0);
        assert!(
            cut.ends_with('…') && fonts.width(&cut, &style) <= 120.0,
            "{cut}"
        );
    }
}
