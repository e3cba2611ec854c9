// What kubevirt-sim's built-in RFB console draws, where (crates/kubevirt-sim/src/rfb/console.rs),
// and how tests read it off a noVNC canvas.
import { pixelAt } from './browser.mjs';

export const BAR_COLOURS = [
  0xffffff, 0xffff00, 0x00ffff, 0x00ff00, 0xff00ff, 0xff0000, 0x0000ff, 0x000000,
];
export const PANEL_COLOUR = 0x102040;
export const TEXT_COLOUR = 0xf0f0f0;
export const TYPED_COLOUR = 0x40ff40;
export const POINTER_COLOUR = 0xff8000;
export const WIDTH = 800;
export const HEIGHT = 600;
export const PANEL_TOP = HEIGHT - 240;
export const MARGIN = 20;
// Text is the 5x7 font in 6x8 cells at scale 2; the typed line starts with "> ".
export const TEXT_CELL = { width: 12, height: 16 };
export const TITLE_AREA = { x: MARGIN, y: PANEL_TOP + 12, width: 16 * 18, height: 8 * 3 };
export const TYPED_AFTER_PROMPT = {
  x: MARGIN + 2 * TEXT_CELL.width,
  y: PANEL_TOP + 120,
  width: 2 * TEXT_CELL.width,
  height: TEXT_CELL.height,
};

/** The area of the `index`th typed character after the prompt. */
export function typedCell(index) {
  return {
    x: TYPED_AFTER_PROMPT.x + index * TEXT_CELL.width,
    y: TYPED_AFTER_PROMPT.y,
    width: TEXT_CELL.width,
    height: TEXT_CELL.height,
  };
}

/** The typed-colour mask of one typed character's cell: which glyph is drawn there. */
export function typedGlyph(frame, index) {
  const { x, y, width, height } = typedCell(index);
  const mask = [];
  for (let row = y; row < y + height; row += 1) {
    for (let column = x; column < x + width; column += 1) {
      mask.push(pixelAt(frame, column, row) === TYPED_COLOUR ? 1 : 0);
    }
  }
  return mask.join('');
}
