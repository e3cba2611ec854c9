//! The simulated VM screen: a test pattern, text drawn with the built-in font, typed keys and
//! the pointer, plus a bounded log of changed rectangles for incremental updates.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::font;
use super::pixel::PixelFormat;

/// Colours of the eight vertical bars, left to right (0xRRGGBB).
pub const BAR_COLOURS: [u32; 8] = [
    0xffffff, 0xffff00, 0x00ffff, 0x00ff00, 0xff00ff, 0xff0000, 0x0000ff, 0x000000,
];
/// Background of the text panel under the bars.
pub const PANEL_COLOUR: u32 = 0x102040;
/// Colour of the title and status text.
pub const TEXT_COLOUR: u32 = 0xf0f0f0;
/// Colour of the typed text.
pub const TYPED_COLOUR: u32 = 0x40ff40;
/// Colour of the pointer crosshair.
pub const POINTER_COLOUR: u32 = 0xff8000;
/// The title drawn on every console.
pub const TITLE: &str = "ws-proxy test VM";

/// Height of the text panel at the bottom of the screen; the bars fill the rest.
pub const PANEL_HEIGHT: u16 = 240;
/// Smallest screen the layout fits on.
pub const MIN_SIZE: (u16, u16) = (640, 480);
/// Largest screen served (bounds the memory of one console and one update).
pub const MAX_SIZE: (u16, u16) = (4096, 4096);

const MARGIN: u16 = 20;
const TITLE_SCALE: u16 = 3;
const TEXT_SCALE: u16 = 2;
const TITLE_OFFSET: u16 = 12;
const VMI_LINE_OFFSET: u16 = 48;
const POINTER_LINE_OFFSET: u16 = 72;
const KEYS_LINE_OFFSET: u16 = 96;
const TYPED_OFFSET: u16 = 120;
const TYPED_LINE_PITCH: u16 = 20;
/// How many lines of typed text the screen keeps (older lines scroll away).
pub const TYPED_LINES: usize = 5;
const POINTER_ARM: u16 = 7;
const POINTER_HALF_THICKNESS: u16 = 1;
const DAMAGE_LOG_LIMIT: usize = 256;

/// A rectangle of the screen, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u16,
    /// Top edge.
    pub y: u16,
    /// Width.
    pub width: u16,
    /// Height.
    pub height: u16,
}

impl Rect {
    /// A rectangle from its corner and size.
    pub const fn new(x: u16, y: u16, width: u16, height: u16) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// Whether the rectangle covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    fn right(&self) -> u32 {
        u32::from(self.x) + u32::from(self.width)
    }

    fn bottom(&self) -> u32 {
        u32::from(self.y) + u32::from(self.height)
    }

    /// The part of `self` inside `other`, if any.
    pub fn intersection(&self, other: &Rect) -> Option<Rect> {
        let left = self.x.max(other.x);
        let top = self.y.max(other.y);
        let right = self.right().min(other.right());
        let bottom = self.bottom().min(other.bottom());
        let width = u16::try_from(right.checked_sub(u32::from(left))?).ok()?;
        let height = u16::try_from(bottom.checked_sub(u32::from(top))?).ok()?;
        let rect = Rect::new(left, top, width, height);
        (!rect.is_empty()).then_some(rect)
    }

    /// Whether `self` lies completely inside `other`.
    pub fn is_inside(&self, other: &Rect) -> bool {
        self.x >= other.x
            && self.y >= other.y
            && self.right() <= other.right()
            && self.bottom() <= other.bottom()
    }

    /// The smallest rectangle covering both.
    pub fn union(&self, other: &Rect) -> Rect {
        let left = self.x.min(other.x);
        let top = self.y.min(other.y);
        let right = self.right().max(other.right());
        let bottom = self.bottom().max(other.bottom());
        Rect::new(
            left,
            top,
            u16::try_from(right - u32::from(left)).unwrap_or(u16::MAX),
            u16::try_from(bottom - u32::from(top)).unwrap_or(u16::MAX),
        )
    }
}

/// Screen size of a built-in RFB console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RfbOptions {
    pub(crate) width: u16,
    pub(crate) height: u16,
}

impl Default for RfbOptions {
    /// 800x600, like a fresh QEMU VGA console.
    fn default() -> Self {
        Self {
            width: 800,
            height: 600,
        }
    }
}

impl RfbOptions {
    /// A screen of this size, clamped to [`MIN_SIZE`]..=[`MAX_SIZE`].
    pub fn new(width: u16, height: u16) -> Self {
        Self {
            width: width.clamp(MIN_SIZE.0, MAX_SIZE.0),
            height: height.clamp(MIN_SIZE.1, MAX_SIZE.1),
        }
    }

    /// Screen width in pixels.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Screen height in pixels.
    pub fn height(&self) -> u16 {
        self.height
    }
}

/// Which changes a session has not seen yet.
pub(crate) enum Damage {
    /// These rectangles changed.
    Rects(Vec<Rect>),
    /// The log no longer reaches back far enough: treat the whole screen as changed.
    Everything,
}

/// The shared screen of one simulated VM. Every RFB session to the VM sees the same screen,
/// as with a real VM's console.
pub struct Console {
    state: Mutex<ScreenState>,
    generation: watch::Sender<u64>,
}

struct ScreenState {
    width: u16,
    height: u16,
    base: Vec<u32>,
    vmi_name: String,
    typed_lines: VecDeque<String>,
    key_presses: u64,
    last_keysym: Option<u32>,
    pointer: (u16, u16),
    buttons: u8,
    generation: u64,
    damage_log: VecDeque<(u64, Rect)>,
    oldest_logged_generation: u64,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Console")
            .field("vmi_name", &state.vmi_name)
            .field("size", &(state.width, state.height))
            .field("generation", &state.generation)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A fresh screen for the VMI called `vmi_name`.
    pub fn new(vmi_name: &str, options: &RfbOptions) -> Self {
        let (width, height) = (options.width, options.height);
        let mut state = ScreenState {
            width,
            height,
            base: vec![0; usize::from(width) * usize::from(height)],
            vmi_name: vmi_name.to_owned(),
            typed_lines: VecDeque::from([String::new()]),
            key_presses: 0,
            last_keysym: None,
            pointer: (width / 2, (height - PANEL_HEIGHT) / 2),
            buttons: 0,
            generation: 0,
            damage_log: VecDeque::new(),
            oldest_logged_generation: 0,
        };
        state.draw_everything();
        Self {
            state: Mutex::new(state),
            generation: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ScreenState> {
        // A panic while drawing leaves a screen that is still safe to show.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Screen width and height.
    pub fn size(&self) -> (u16, u16) {
        let state = self.lock();
        (state.width, state.height)
    }

    /// The whole screen.
    pub fn full_rect(&self) -> Rect {
        let (width, height) = self.size();
        Rect::new(0, 0, width, height)
    }

    /// The typed text as shown on screen (lines joined by `\n`).
    pub fn typed_text(&self) -> String {
        let state = self.lock();
        state
            .typed_lines
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last pointer position and button mask.
    pub fn pointer(&self) -> (u16, u16, u8) {
        let state = self.lock();
        (state.pointer.0, state.pointer.1, state.buttons)
    }

    /// The colour (0xRRGGBB) a client sees at (`x`, `y`), pointer included.
    pub fn pixel(&self, x: u16, y: u16) -> Option<u32> {
        let state = self.lock();
        (x < state.width && y < state.height).then(|| state.screen_pixel(x, y))
    }

    /// The rectangle where typed text is drawn.
    pub fn typed_area(&self) -> Rect {
        self.lock().typed_area()
    }

    /// Applies an RFB KeyEvent: printable keys (on press) are added to the typed text,
    /// Return starts a new line, BackSpace deletes.
    pub fn key_event(&self, down: bool, keysym: u32) {
        if !down {
            return;
        }
        let mut state = self.lock();
        state.key_presses += 1;
        state.last_keysym = Some(keysym);
        state.apply_key(keysym);
        let keys_line = state.panel_line(KEYS_LINE_OFFSET);
        state.draw_keys_line();
        let typed_area = state.typed_area();
        state.draw_typed_text();
        self.publish(state, &[keys_line, typed_area]);
    }

    /// Applies an RFB PointerEvent: moves the crosshair and updates the pointer line.
    pub fn pointer_event(&self, buttons: u8, x: u16, y: u16) {
        let mut state = self.lock();
        let x = x.min(state.width.saturating_sub(1));
        let y = y.min(state.height.saturating_sub(1));
        if state.pointer == (x, y) && state.buttons == buttons {
            return;
        }
        let old_marker = state.pointer_rect();
        state.pointer = (x, y);
        state.buttons = buttons;
        let new_marker = state.pointer_rect();
        let pointer_line = state.panel_line(POINTER_LINE_OFFSET);
        state.draw_pointer_line();
        self.publish(state, &[old_marker, new_marker, pointer_line]);
    }

    fn publish(&self, mut state: MutexGuard<'_, ScreenState>, changed: &[Rect]) {
        state.generation += 1;
        let generation = state.generation;
        for rect in changed.iter().filter(|rect| !rect.is_empty()) {
            state.damage_log.push_back((generation, *rect));
        }
        while state.damage_log.len() > DAMAGE_LOG_LIMIT {
            if let Some((dropped, _)) = state.damage_log.pop_front() {
                state.oldest_logged_generation = dropped;
            }
        }
        drop(state);
        self.generation.send_replace(generation);
    }

    /// A receiver that wakes whenever the screen changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The current generation (bumped by every change).
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// What changed after generation `seen`, and the generation it brings the caller to.
    pub(crate) fn damage_since(&self, seen: u64) -> (Damage, u64) {
        let state = self.lock();
        if seen < state.oldest_logged_generation {
            return (Damage::Everything, state.generation);
        }
        let rects = state
            .damage_log
            .iter()
            .filter(|(generation, _)| *generation > seen)
            .map(|(_, rect)| *rect)
            .collect();
        (Damage::Rects(rects), state.generation)
    }

    /// Appends the pixels of `rect` (clipped to the screen by the caller) in `format`.
    pub(crate) fn encode_rect(&self, rect: &Rect, format: &PixelFormat, out: &mut Vec<u8>) {
        let state = self.lock();
        out.reserve(usize::from(rect.width) * usize::from(rect.height) * format.bytes_per_pixel());
        for y in rect.y..rect.y.saturating_add(rect.height) {
            for x in rect.x..rect.x.saturating_add(rect.width) {
                format.push_pixel(state.screen_pixel(x, y), out);
            }
        }
    }
}

impl ScreenState {
    fn panel_top(&self) -> u16 {
        self.height - PANEL_HEIGHT
    }

    fn panel_line(&self, offset: u16) -> Rect {
        Rect::new(
            0,
            self.panel_top() + offset,
            self.width,
            font::CELL_HEIGHT as u16 * TEXT_SCALE,
        )
    }

    fn typed_area(&self) -> Rect {
        Rect::new(
            0,
            self.panel_top() + TYPED_OFFSET,
            self.width,
            TYPED_LINE_PITCH * TYPED_LINES as u16,
        )
    }

    fn typed_columns(&self) -> usize {
        usize::from((self.width - 2 * MARGIN) / (font::CELL_WIDTH as u16 * TEXT_SCALE))
    }

    fn screen_pixel(&self, x: u16, y: u16) -> u32 {
        let (pointer_x, pointer_y) = self.pointer;
        let dx = x.abs_diff(pointer_x);
        let dy = y.abs_diff(pointer_y);
        let on_crosshair = (dx <= POINTER_ARM && dy <= POINTER_HALF_THICKNESS)
            || (dy <= POINTER_ARM && dx <= POINTER_HALF_THICKNESS);
        if on_crosshair {
            POINTER_COLOUR
        } else {
            self.base[usize::from(y) * usize::from(self.width) + usize::from(x)]
        }
    }

    fn pointer_rect(&self) -> Rect {
        let (x, y) = self.pointer;
        let left = x.saturating_sub(POINTER_ARM);
        let top = y.saturating_sub(POINTER_ARM);
        let right = (x + POINTER_ARM + 1).min(self.width);
        let bottom = (y + POINTER_ARM + 1).min(self.height);
        Rect::new(left, top, right - left, bottom - top)
    }

    fn fill(&mut self, rect: Rect, colour: u32) {
        let Some(rect) = rect.intersection(&Rect::new(0, 0, self.width, self.height)) else {
            return;
        };
        let width = usize::from(self.width);
        for y in rect.y..rect.y + rect.height {
            let row = usize::from(y) * width;
            self.base[row + usize::from(rect.x)..row + usize::from(rect.x + rect.width)]
                .fill(colour);
        }
    }

    fn draw_text(&mut self, x: u16, y: u16, text: &str, scale: u16, colour: u32) {
        let scale_px = usize::from(scale);
        let (width, height) = (usize::from(self.width), usize::from(self.height));
        for (index, character) in text.chars().enumerate() {
            let cell_left = usize::from(x) + index * font::CELL_WIDTH * scale_px;
            if cell_left >= width {
                break;
            }
            for row in 0..font::GLYPH_HEIGHT {
                for column in 0..font::GLYPH_WIDTH {
                    if !font::pixel_is_set(character, column, row) {
                        continue;
                    }
                    for sub_y in 0..scale_px {
                        for sub_x in 0..scale_px {
                            let px = cell_left + column * scale_px + sub_x;
                            let py = usize::from(y) + row * scale_px + sub_y;
                            if px < width && py < height {
                                self.base[py * width + px] = colour;
                            }
                        }
                    }
                }
            }
        }
    }

    fn draw_everything(&mut self) {
        let bars_height = self.panel_top();
        let bar_width = self.width / BAR_COLOURS.len() as u16;
        for (index, colour) in BAR_COLOURS.iter().enumerate() {
            let left = bar_width * index as u16;
            let width = if index + 1 == BAR_COLOURS.len() {
                self.width - left
            } else {
                bar_width
            };
            self.fill(Rect::new(left, 0, width, bars_height), *colour);
        }
        let panel = Rect::new(0, bars_height, self.width, PANEL_HEIGHT);
        self.fill(panel, PANEL_COLOUR);
        let top = self.panel_top();
        self.draw_text(MARGIN, top + TITLE_OFFSET, TITLE, TITLE_SCALE, TEXT_COLOUR);
        let vmi_line = format!("vmi: {}", self.vmi_name);
        self.draw_text(
            MARGIN,
            top + VMI_LINE_OFFSET,
            &vmi_line,
            TEXT_SCALE,
            TEXT_COLOUR,
        );
        self.draw_pointer_line();
        self.draw_keys_line();
        self.draw_typed_text();
    }

    fn draw_pointer_line(&mut self) {
        let line = self.panel_line(POINTER_LINE_OFFSET);
        self.fill(line, PANEL_COLOUR);
        let text = format!(
            "pointer: {},{} buttons: {:#04x}",
            self.pointer.0, self.pointer.1, self.buttons
        );
        self.draw_text(MARGIN, line.y, &text, TEXT_SCALE, TEXT_COLOUR);
    }

    fn draw_keys_line(&mut self) {
        let line = self.panel_line(KEYS_LINE_OFFSET);
        self.fill(line, PANEL_COLOUR);
        let text = match self.last_keysym {
            Some(keysym) => format!("keys: {} last keysym: {keysym:#06x}", self.key_presses),
            None => "keys: 0 (type to see keys here)".to_owned(),
        };
        self.draw_text(MARGIN, line.y, &text, TEXT_SCALE, TEXT_COLOUR);
    }

    fn draw_typed_text(&mut self) {
        let area = self.typed_area();
        self.fill(area, PANEL_COLOUR);
        let lines: Vec<String> = self.typed_lines.iter().cloned().collect();
        for (index, line) in lines.iter().enumerate() {
            let y = area.y + TYPED_LINE_PITCH * index as u16;
            self.draw_text(MARGIN, y, &format!("> {line}"), TEXT_SCALE, TYPED_COLOUR);
        }
    }

    fn apply_key(&mut self, keysym: u32) {
        const BACKSPACE: u32 = 0xff08;
        const RETURN: u32 = 0xff0d;
        const KEYPAD_ENTER: u32 = 0xff8d;
        let columns = self.typed_columns().saturating_sub(2);
        match keysym {
            BACKSPACE => {
                let current_is_empty = self.typed_lines.back().is_none_or(String::is_empty);
                if current_is_empty && self.typed_lines.len() > 1 {
                    self.typed_lines.pop_back();
                } else if let Some(line) = self.typed_lines.back_mut() {
                    line.pop();
                }
            }
            RETURN | KEYPAD_ENTER => self.typed_lines.push_back(String::new()),
            0x20..=0x7e => {
                let character = char::from(keysym as u8);
                match self.typed_lines.back_mut() {
                    Some(line) if line.chars().count() < columns => line.push(character),
                    _ => self.typed_lines.push_back(character.to_string()),
                }
            }
            _ => {}
        }
        while self.typed_lines.len() > TYPED_LINES {
            self.typed_lines.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> Console {
        Console::new("testvm", &RfbOptions::default())
    }

    #[test]
    fn shows_colour_bars_on_top() {
        let console = console();
        for (index, colour) in BAR_COLOURS.iter().enumerate() {
            let x = 100 * index as u16 + 50;
            assert_eq!(console.pixel(x, 20), Some(*colour), "bar {index}");
        }
        assert_eq!(console.pixel(5, 595), Some(PANEL_COLOUR));
    }

    #[test]
    fn typing_changes_the_typed_area_and_logs_damage() {
        let console = console();
        let area = console.typed_area();
        let ink_in_area = |console: &Console| {
            (area.y..area.y + area.height)
                .flat_map(|y| (area.x..area.x + area.width).map(move |x| (x, y)))
                .filter(|(x, y)| console.pixel(*x, *y) == Some(TYPED_COLOUR))
                .count()
        };
        let before = ink_in_area(&console);
        let seen = console.generation();
        console.key_event(true, u32::from(b'W'));
        console.key_event(false, u32::from(b'W'));
        assert_eq!(console.typed_text(), "W");
        assert!(ink_in_area(&console) > before);
        let (Damage::Rects(rects), now) = console.damage_since(seen) else {
            panic!("the log reaches back one change")
        };
        assert_eq!(now, seen + 1);
        assert!(rects.contains(&area));
    }

    #[test]
    fn return_and_backspace_edit_lines_and_old_lines_scroll_away() {
        let console = console();
        for key in [u32::from(b'a'), 0xff0d, u32::from(b'b'), 0xff08, 0xff08] {
            console.key_event(true, key);
        }
        assert_eq!(console.typed_text(), "a");
        for _ in 0..(TYPED_LINES + 3) {
            console.key_event(true, u32::from(b'x'));
            console.key_event(true, 0xff0d);
        }
        assert_eq!(console.typed_text().split('\n').count(), TYPED_LINES);
    }

    #[test]
    fn pointer_crosshair_follows_the_pointer() {
        let console = console();
        console.pointer_event(1, 30, 40);
        assert_eq!(console.pixel(30, 40), Some(POINTER_COLOUR));
        assert_eq!(console.pointer(), (30, 40, 1));
        console.pointer_event(0, 300, 200);
        assert_eq!(console.pixel(30, 40), Some(BAR_COLOURS[0]));
        assert_eq!(console.pixel(300, 200), Some(POINTER_COLOUR));
    }

    #[test]
    fn a_long_gap_reports_everything_changed() {
        let console = console();
        for step in 0..(DAMAGE_LOG_LIMIT as u16) {
            console.pointer_event(0, step, 10);
        }
        assert!(matches!(console.damage_since(0).0, Damage::Everything));
    }

    #[test]
    fn rect_arithmetic() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(5, 5, 10, 10);
        assert_eq!(a.intersection(&b), Some(Rect::new(5, 5, 5, 5)));
        assert_eq!(a.union(&b), Rect::new(0, 0, 15, 15));
        assert_eq!(a.intersection(&Rect::new(10, 0, 5, 5)), None);
        assert!(Rect::new(1, 1, 2, 2).is_inside(&a));
        assert!(!b.is_inside(&a));
    }
}
