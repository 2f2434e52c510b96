// The math of jaxstep's three kernels (bake, physics, render), written once for g++ and nvcc.
//
// Every function here is pure and works on one item (a texel, an agent, a ray, one env's settling) given raw
// pointers to one env's data, so the CPU handler can loop over items and the CUDA handlers can share them out
// over threads and warps.
// No STL, exceptions or globals: the same code must compile as device code.
//
// Units: metres, degrees, seconds. Line order within an env: agent a's MODEL_LINES model lines at
// a*MODEL_LINES .. a*MODEL_LINES + 7, then the geometry's walls in order.
#pragma once

#include <math.h>

#ifdef __CUDACC__
#define JS_FN __host__ __device__ inline
#else
#define JS_FN inline
#endif

namespace jaxstep {

constexpr int MODEL_LINES = 8;      // lines in an agent's octagonal model
constexpr float AMBIENT = .1f;      // light every texel gets, occluded or not
constexpr float LUMINANCE = 2.f;    // scale of a light's intensity / squared distance
constexpr float AGENT_WIDTH = .15f; // metres; the model is scaled by half of this

struct Vec {
  float x, y;
};

JS_FN Vec operator+(Vec a, Vec b) { return {a.x + b.x, a.y + b.y}; }
JS_FN Vec operator-(Vec a, Vec b) { return {a.x - b.x, a.y - b.y}; }
JS_FN Vec operator*(Vec a, float k) { return {a.x * k, a.y * k}; }
JS_FN float dot(Vec a, Vec b) { return a.x * b.x + a.y * b.y; }
JS_FN float cross(Vec a, Vec b) { return a.x * b.y - a.y * b.x; }
JS_FN float length(Vec a) { return sqrtf(dot(a, a)); }
JS_FN Vec load_vec(const float* p) { return {p[0], p[1]}; }

// A load through the GPU's read-only data cache (plain on the CPU): unlike a plain load it may be moved past stores
// to shared memory, so that a loop's loads can be issued ahead of its work.
template <typename T>
JS_FN T read_only(const T* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}
JS_FN Vec lerp(Vec a, Vec b, float t) { return a * (1.f - t) + b * t; }

// Rotation by an angle in degrees, as (cos, sin).
struct Rotation {
  float c, s;
};

JS_FN Rotation rotation(float degrees) {
  const float radians = degrees * 0.017453292519943295f;
#ifdef __CUDA_ARCH__
  Rotation r;
  sincosf(radians, &r.s, &r.c);  // one argument reduction for both
  return r;
#else
  return {cosf(radians), sinf(radians)};
#endif
}

JS_FN Vec rotate(Rotation r, Vec v) { return {r.c * v.x - r.s * v.y, r.s * v.x + r.c * v.y}; }

// Wraps an angle in degrees into [-180, 180).
JS_FN float wrap_degrees(float a) {
  float x = fmodf(a + 180.f, 360.f);
  if (x < 0.f) x += 360.f;
  if (x >= 360.f) x -= 360.f;
  return x - 180.f;
}

// Offsets are int32 (so are the buffers that hold them), so the clamping is done in int, not long.
JS_FN int clamp_index(int i, int lo, int hi) { return i < lo ? lo : (i > hi ? hi : i); }

// ---------------------------------------------------------------------------------------------------
// Geometry primitives

// Where the infinite lines P + sU and Q + tV cross. Nearly parallel lines never cross (s = t = inf).
struct Crossing {
  float s, t;
};

// `intersect` before its divisions: s = ns / den, t = nt / den.
struct CrossingTerms {
  float ns, nt, den;
};

JS_FN CrossingTerms crossing_terms(Vec P, Vec U, Vec Q, Vec V) {
  const Vec PQ = Q - P;
  return {cross(PQ, V), cross(PQ, U), cross(U, V)};
}

JS_FN bool nearly_parallel(float den) { return fabsf(den) < 1.e-3f; }

JS_FN Crossing divided(CrossingTerms c) { return {c.ns / c.den, c.nt / c.den}; }

JS_FN Crossing intersect(Vec P, Vec U, Vec Q, Vec V) {
  const CrossingTerms c = crossing_terms(P, U, Q, V);
  if (nearly_parallel(c.den)) return {INFINITY, INFINITY};
  return divided(c);
}

// Q projected onto the infinite line P + sU: s is the fraction along U, d the distance from the line.
struct Projection {
  float s, d;
};

JS_FN Projection project(Vec P, Vec U, Vec Q) {
  const float u = length(U) + 1.e-6f;
  const Vec PQ = Q - P;
  return {dot(PQ, U) / (u * u), fabsf(cross(PQ, U)) / u};
}

// An axis-aligned box, for culling segments that cannot come near something inside it.
struct Box {
  Vec lo, hi;
};

// Whether the segment a-b lies wholly on the far side of one of the box's edges. NaN endpoints never do.
JS_FN bool outside(const Box& box, Vec a, Vec b) {
  return ((a.x < box.lo.x) & (b.x < box.lo.x)) | ((a.x > box.hi.x) & (b.x > box.hi.x)) |
         ((a.y < box.lo.y) & (b.y < box.lo.y)) | ((a.y > box.hi.y) & (b.y > box.hi.y));
}

// Whether a wall may stop a move whose box is `near` (see sweep_box). A wall shorter than 10 micrometres (squared
// length below 1e-10) is never culled: `project` and `wall_collision` add 1e-6 to its length, which shrinks its
// distances so that it can stop a move from far outside the box.
JS_FN bool may_stop(const Box& near, Vec a, Vec b) {
  const Vec ab = b - a;
  return !outside(near, a, b) | !(dot(ab, ab) >= 1.e-10f);
}

// Endpoints of model line m (0..7) of an agent at `position` facing `r`: an octagon with corners
// (+-.5, +-1), (+-1, +-.5) scaled by AGENT_WIDTH/2, walked anticlockwise from (-.5, -1).
// Corner m of the octagon, from bit masks over m: bit m of `whole` says the coordinate is +-1 rather than +-.5,
// bit m of `negative` its sign. Neither a table (nvcc would put it in slow local memory) nor a switch (a warp's
// lanes, each at its own corner, would take the eight cases one after another).
JS_FN float corner_coordinate(int m, unsigned whole, unsigned negative) {
  const float magnitude = (whole >> m) & 1u ? 1.f : .5f;
  return (negative >> m) & 1u ? -magnitude : magnitude;
}

JS_FN Vec model_corner(int m) {
  m &= MODEL_LINES - 1;
  // x: -.5, .5, 1, 1, .5, -.5, -1, -1; y: -1, -1, -.5, .5, 1, 1, .5, -.5
  return {corner_coordinate(m, 0xCCu, 0xE1u), corner_coordinate(m, 0x33u, 0x87u)};
}

JS_FN void model_line(Rotation r, Vec position, int m, Vec* a, Vec* b) {
  const float k = AGENT_WIDTH / 2.f;
  *a = rotate(r, model_corner(m) * k) + position;
  *b = rotate(r, model_corner((m + 1) % MODEL_LINES) * k) + position;
}

// ---------------------------------------------------------------------------------------------------
// Lighting (the bake kernel, and agent texels at render time)

// Whether wall a-b hides the light at I from point C. .999 rather than 1, so that texels on a wall are not
// shadowed by the wall itself. Only a wall that crosses the segment I-C can, give or take rounding and, for a wall
// nearly in line with the segment, the absolute parallel test (see warp_live_light's margin in handlers.cu).
JS_FN bool occludes(Vec I, Vec C, Vec a, Vec b) {
  const Crossing p = intersect(I, C - I, a, b - a);
  return (p.t > 0.f) & (p.t < 1.f) & (p.s > 0.f) & (p.s < .999f);
}

// Light from `light` (x, y, intensity) reaching point C if nothing hides it.
JS_FN float light_from(const float* light, Vec C) {
  const Vec d = load_vec(light) - C;
  return LUMINANCE * light[2] / fmaxf(dot(d, d), 1.f);
}

// Light reaching point C: AMBIENT plus LUMINANCE * I / max(d^2, 1) from each light not hidden by a wall,
// clamped to 1. `lights` is (n_lights, 3) as x, y, intensity; `walls` is (n_walls, 2, 2).
JS_FN float light_intensity(Vec C, const float* lights, int n_lights, const float* walls, int n_walls) {
  float intensity = AMBIENT;
  for (int i = 0; i < n_lights; i++) {
    const Vec I = load_vec(lights + 3 * i);
    bool visible = true;
    for (int w = 0; w < n_walls && visible; w++) {
      visible = !occludes(I, C, load_vec(walls + 4 * w), load_vec(walls + 4 * w + 2));
    }
    if (visible) intensity += light_from(lights + 3 * i, C);
  }
  return fminf(intensity, 1.f);
}

// ---------------------------------------------------------------------------------------------------
// Scenes, their grids and sets of walls

// A geometry's uniform grid (jaxstep/grid.py): for each square cell and each reach, the walls that come within the
// reach of some point of the cell, ascending. Cell c (row y, column x) is c = y * nx + x.
struct Grid {
  const float* frame;  // lower-left corner x, y (metres), cells per metre, the n_reaches reaches (metres); null: none
  int nx, ny, n_reaches;
  const int* lists;    // list (c, l) is walls[lists[c * n_reaches + l] .. lists[c * n_reaches + l + 1]]
  const int* walls;    // n_listed wall indices within the geometry
  int n_listed;
};

// One env's static data as raw pointers (already offset to the env's geometry where noted).
struct EnvScene {
  const float* walls;  // (n_walls, 2, 2), this geometry's walls
  int n_walls;
  const float* lights;  // (n_lights, 3), this geometry's lights
  int n_lights;
  const float* texels;        // (T, 3), all texels of the scenery
  const float* baked;         // (T,), all baked intensities
  const int* model_texels;    // (MODEL_LINES + 1,) offsets of the model lines' texels
  const int* wall_texels;     // (n_walls + 1,) offsets of this geometry's walls' texels
  Grid grid;
};

// The walls a search goes through: the first `count` of a geometry's walls (n_walls, 2, 2) in order or, where
// `listed` is not null, the `count` walls it names.
struct WallSet {
  const float* walls;
  int n_walls;
  const int* listed;
  int count;
};

JS_FN WallSet all_walls(const EnvScene& scene) { return {scene.walls, scene.n_walls, nullptr, scene.n_walls}; }

// Entry i of the set, as an index among the geometry's walls. A listed index out of range is clamped: a corrupt
// grid reads the wrong walls, never outside them.
JS_FN int wall_at(const WallSet& set, int i) {
  return set.listed ? clamp_index(read_only(set.listed + i), 0, set.n_walls - 1) : i;
}

// The ends of wall w of a set (a whole geometry's walls are 16-byte aligned: XLA aligns buffers, and each wall is
// 4 floats).
JS_FN void wall_ends(const WallSet& set, int w, Vec* a, Vec* b) {
#ifdef __CUDA_ARCH__
  const float4 e = __ldg(reinterpret_cast<const float4*>(set.walls) + w);
  *a = {e.x, e.y};
  *b = {e.z, e.w};
#else
  *a = load_vec(set.walls + 4 * w);
  *b = load_vec(set.walls + 4 * w + 2);
#endif
}

// The cell of the grid that holds p, or -1 off the grid (NaN included).
JS_FN int grid_cell(const Grid& g, Vec p) {
  if (!g.frame) return -1;
  const float x = (p.x - g.frame[0]) * g.frame[2], y = (p.y - g.frame[1]) * g.frame[2];
  if (!((x >= 0.f) & (x < (float)g.nx) & (y >= 0.f) & (y < (float)g.ny))) return -1;
  return (int)y * g.nx + (int)x;
}

JS_FN float grid_reach(const Grid& g, int level) { return g.frame[3 + level]; }

// The walls within reach `level` of every point of cell c (not -1).
JS_FN WallSet cell_walls(const EnvScene& scene, int c, int level) {
  const Grid& g = scene.grid;
  const int i = c * g.n_reaches + level;
  const int start = clamp_index(g.lists[i], 0, g.n_listed), end = clamp_index(g.lists[i + 1], start, g.n_listed);
  return {scene.walls, scene.n_walls, g.walls + start, scene.n_walls > 0 ? end - start : 0};
}

// The box of points within `reach` of p along each axis (inf: the whole plane).
JS_FN Box reach_box(Vec p, float reach) { return {{p.x - reach, p.y - reach}, {p.x + reach, p.y + reach}}; }

JS_FN bool contains(const Box& outer, const Box& inner) {
  return (inner.lo.x >= outer.lo.x) & (inner.lo.y >= outer.lo.y) & (inner.hi.x <= outer.hi.x) &
         (inner.hi.y <= outer.hi.y);
}

// ---------------------------------------------------------------------------------------------------
// Physics

// Keeps a collision fraction sensible: 1% early so nothing is stuck next step, NaN -> 0, clamped to [0, 1].
JS_FN float sensibilize(float p) {
  if (isnan(p)) return 0.f;
  return fmaxf(fminf(p * .99f, 1.f), 0.f);
}

// Fraction of the move v (metres this step) from p at which p first comes within r of q; inf if it never does
// (it passes wide, moves away or stands still); negative if p starts within r and is closing. Along and across
// are taken in metres and divided by |v| once, so a tiny v (say, the rounding left in the difference of two
// equal velocities) gives a huge fraction, not 0.
JS_FN float first_contact(Vec p, Vec v, Vec q, float r) {
  const float len = length(v);
  const Vec pq = q - p;
  const float along = dot(pq, v) / len, across = fabsf(cross(pq, v)) / len;
  if (!((len > 0.f) & (0.f < along) & (across < r))) return INFINITY;
  return (along - sqrtf(r * r - across * across)) / len;
}

// Largest fraction of a move `v` (metres this step) a disc of radius r at p can make before coming within
// r of point q (inf, for no contact, clamps to 1).
JS_FN float point_collision(Vec p, Vec v, Vec q, float r) { return sensibilize(first_contact(p, v, q, r)); }

// Fraction of the move v0 an agent at p0 can make before touching an agent at p1 moving by v1.
JS_FN float agent_collision(Vec p0, Vec v0, Vec p1, Vec v1, float radius) {
  // 1.001: a little bigger, so the camera's near plane never pokes through
  return point_collision(p0, v0 - v1, p1, 1.001f * 2.f * radius);
}

// Fraction of the move v an agent at p can make before touching the wall a-b.
JS_FN float wall_collision(Vec p, Vec v, Vec a, Vec b, float radius) {
  const float r = 1.001f * radius;
  const Vec ab = b - a;
  const Projection start = project(a, ab, p), end = project(a, ab, p + v);
  const float dp = start.d;
  float x = 1.f;

  // passing through the wall
  const Crossing mid = intersect(p, v, a, ab);
  if ((0.f < mid.s) & (mid.s < 1.f) & (0.f < mid.t) & (mid.t < 1.f)) {
    x = fminf(x, sensibilize((1.f - r / dp) * mid.s));
  }
  // passing within r of either end
  x = fminf(x, point_collision(p, v, a, r));
  x = fminf(x, point_collision(p, v, b, r));
  // ending within r of the wall's middle, having come nearer
  if ((0.f < end.s) & (end.s < 1.f) & (end.d < r) & (end.d < dp)) {
    x = fminf(x, sensibilize((dp - r) / (dp - end.d)));
  }
  // coming nearer than r to the wall's middle on the way to somewhere past its end (a graze): from the fraction
  // f at which the distance from the wall's line falls to r (0 if it already has), the first fraction g at which
  // the centre is beside the wall (its projection on the wall in [0, 1]), if the centre is then still within r of
  // the line. Signed distances, so a move that crosses the line counts too.
  const float u = length(ab) + 1.e-6f;
  const float cp = cross(ab, p - a);
  const float sign = cp < 0.f ? -1.f : 1.f;
  const float sp = sign * cp / u, sq = sign * cross(ab, p + v - a) / u;
  if ((sq < sp) & (sq < r)) {
    const float f = fmaxf((sp - r) / (sp - sq), 0.f);
    const float ap = start.s, aq = end.s;
    const float af = ap + f * (aq - ap);
    float g = f;
    if (af > 1.f) g = aq < af ? (ap - 1.f) / (ap - aq) : 2.f;  // 2: not beside the wall during this move
    if (af < 0.f) g = aq > af ? ap / (ap - aq) : 2.f;
    g = fmaxf(g, f);
    if ((g <= 1.f) & (sp + g * (sq - sp) > -r)) x = fminf(x, sensibilize(g));
  }
  return x;
}

// The box around the move v from p, lengthened by a quarter at each end and widened by the contact reach
// (1.001 radius, as wall_collision) and 5 cm. Every contact wall_collision reports lies within the reach of the
// move, at a fraction below 1 / .99 of it (sensibilize keeps 99%), so a wall wholly outside the box gives 1: the
// slack is far wider than rounding. A NaN or infinite move makes a box that culls nothing.
JS_FN Box sweep_box(Vec p, Vec v, float radius) {
  const Vec s = p - v * .25f, e = p + v * 1.25f;
  const float m = 1.001f * radius + .05f;
  return {{fminf(s.x, e.x) - m, fminf(s.y, e.y) - m}, {fmaxf(s.x, e.x) + m, fmaxf(s.y, e.y) + m}};
}

// Agent a's move this step: where it starts and the metres it would go. positions, velocity: (n_agents, 2).
struct Move {
  Vec p, v;
};

JS_FN Move move_of(int a, const float* positions, const float* velocity, float fps) {
  return {load_vec(positions + 2 * a), load_vec(velocity + 2 * a) * (1.f / fps)};
}

// The largest fraction of agent a's move m before it touches another agent (every `stride`th from `first`).
JS_FN float agents_progress(Move m, int a, int n_agents, const float* positions, const float* velocity,
                            float fps, float radius, int first = 0, int stride = 1) {
  float x = 1.f;
  for (int o = first; o < n_agents; o += stride) {
    if (o == a) continue;
    const Vec vo = load_vec(velocity + 2 * o) * (1.f / fps);
    x = fminf(x, agent_collision(m.p, m.v, load_vec(positions + 2 * o), vo, radius));
  }
  return x;
}

// The largest fraction of a move before it touches one of a set's walls (every `stride`th entry from `first`).
// Most walls near a step's move are still far from it: a box test skips their wall_collision.
JS_FN float walls_progress(Move m, const WallSet& set, float radius, int first = 0, int stride = 1) {
  const Box near = sweep_box(m.p, m.v, radius);
  float x = 1.f;
  for (int i = first; i < set.count; i += stride) {
    Vec wa, wb;
    wall_ends(set, wall_at(set, i), &wa, &wb);
    if (may_stop(near, wa, wb)) x = fminf(x, wall_collision(m.p, m.v, wa, wb, radius));
  }
  return x;
}

// The walls that may stop a move: those of its start's cell for the least reach (the reaches ascend) within which
// its box (sweep_box) lies (a wall that misses the box cannot stop the move, and every wall within the reach of the
// start is listed); all of them where the box lies within none.
JS_FN WallSet move_walls(const EnvScene& scene, Move m, float radius) {
  const int c = grid_cell(scene.grid, m.p);
  if (c >= 0) {
    const Box sweep = sweep_box(m.p, m.v, radius);
    for (int level = 0; level < scene.grid.n_reaches; level++) {
      if (contains(reach_box(m.p, grid_reach(scene.grid, level)), sweep)) return cell_walls(scene, c, level);
    }
  }
  return all_walls(scene);
}

// One agent's pose after moving `progress` of its step; velocities are zeroed where it was stopped short.
struct Pose {
  float angle, x, y, vx, vy, angvelocity;
};

JS_FN Pose advance(Pose in, float progress, float fps) {
  const float k = progress / fps;
  const bool stopped = progress < 1.f;
  return {wrap_degrees(in.angle + k * in.angvelocity),
          in.x + k * in.vx,
          in.y + k * in.vy,
          stopped ? 0.f : in.vx,
          stopped ? 0.f : in.vy,
          stopped ? 0.f : in.angvelocity};
}

// Settling: each agent's progress assumes the others make their whole moves (megastep's rule), so a follower
// can run into, or through, a leader that a wall stopped short. Read a step as time: an agent moves at its full
// velocity until its progress runs out, then stands. Up to the time the first of two agents stops, megastep's
// check already keeps them apart; after it, the one still moving must not run into where the other stands.

JS_FN float end_coordinate(float start, float velocity, float progress, float fps) {
  return start + (progress / fps) * velocity;  // as `advance` computes it
}

// Progress 1% short of the rest of the way from fraction `from` of the step to `contact`, as megastep stops 1%
// short of the whole way; NaN -> 0, clamped to [0, 1]. Continuous in `from`, so rounding moves it little.
JS_FN float stop_short(float from, float contact) {
  const float x = from + .99f * (contact - from);
  if (isnan(x)) return 0.f;
  return fmaxf(fminf(x, 1.f), 0.f);
}

// The fraction of the step at which agent i (at pi, moving vi metres per step) comes within `reach` of where
// agent j (at pj, moving vj) stood still from fraction xj of the step on; inf if it never does.
JS_FN float catch_up(Vec pi, Vec vi, Vec pj, Vec vj, float xj, float reach) {
  return xj + first_contact(pi + vi * xj, vi, pj + vj * xj, reach);
}

// Whether agents i and j, ending where `progress` takes them, end within 2 radius of each other and nearer than
// they started: a last guard against rounding, since the checks above should already prevent it.
JS_FN bool closing_overlap(const float* positions, const float* velocity, const float* progress, int i, int j,
                           float fps, float radius) {
  const Vec pi = load_vec(positions + 2 * i), pj = load_vec(positions + 2 * j);
  const Vec ei = {end_coordinate(pi.x, velocity[2 * i], progress[i], fps),
                  end_coordinate(pi.y, velocity[2 * i + 1], progress[i], fps)};
  const Vec ej = {end_coordinate(pj.x, velocity[2 * j], progress[j], fps),
                  end_coordinate(pj.y, velocity[2 * j + 1], progress[j], fps)};
  const Vec end = ei - ej, start = pi - pj;
  const float reach = 2.f * radius;
  return (dot(end, end) < reach * reach) & (dot(end, end) < dot(start, start));
}

// Agent i's progress cut where it would catch up with an agent that stopped earlier, where that one stands.
JS_FN float caught_up_progress(int i, int n_agents, const float* positions, const float* velocity, float fps,
                               float radius, const float* progress) {
  const float k = 1.f / fps, reach = 1.001f * 2.f * radius;  // as agent_collision
  const Vec pi = load_vec(positions + 2 * i), vi = load_vec(velocity + 2 * i) * k;
  float x = progress[i];
  for (int j = 0; j < n_agents; j++) {
    if ((j == i) || !(progress[j] < progress[i])) continue;
    const float t = catch_up(pi, vi, load_vec(positions + 2 * j), load_vec(velocity + 2 * j) * k, progress[j], reach);
    if (t < INFINITY) x = fminf(x, stop_short(progress[j], t));
  }
  return x;
}

// Settles one env's progress in place. positions, velocity: (n_agents, 2); progress: (n_agents,). Sweeps cut
// agents' progress where they would catch up with others, until nothing changes; then a last sweep holds any
// agent that would still end overlapping another (rounding), and if it held one, the sweeps start again.
// Progress only ever falls. Should that not settle within 4 n_agents + 4 sweeps (never seen), every agent is
// held, which is always safe: they start apart.
JS_FN void settle(int n_agents, const float* positions, const float* velocity, float fps, float radius,
                  float* progress) {
  for (int sweep = 0; sweep < 4 * n_agents + 4; sweep++) {
    bool changed = false;
    for (int i = 0; i < n_agents; i++) {
      if (progress[i] == 0.f) continue;
      const float x = caught_up_progress(i, n_agents, positions, velocity, fps, radius, progress);
      if (x < progress[i]) {
        progress[i] = x;
        changed = true;
      }
    }
    if (changed) continue;
    for (int i = 0; i < n_agents; i++) {
      for (int j = 0; (j < n_agents) & (progress[i] != 0.f); j++) {
        if ((j != i) && closing_overlap(positions, velocity, progress, i, j, fps, radius)) {
          progress[i] = 0.f;
          changed = true;
        }
      }
    }
    if (!changed) return;
  }
  for (int i = 0; i < n_agents; i++) progress[i] = 0.f;
}

// ---------------------------------------------------------------------------------------------------
// Rendering

// Direction of ray r of R in the agent frame, with x pointing forward; half_width = tan(fov/2).
JS_FN Vec ray_direction(int r, int R, float half_width) {
  return {1.f, (float)(R - 2 * r - 1) * half_width / (float)R};
}

struct RayHit {
  int index;       // line hit, in the env's line order; -1 for none
  float location;  // fraction along the line, in [0, 1]
  float dot;       // cosine between the ray and the line (set by finish_hit)
  float distance;  // metres from the agent's centre; inf for none (set by finish_hit)
  Vec line;        // the line's direction b - a, kept during the search for finish_hit's cosine
};

JS_FN RayHit no_hit() { return {-1, 0.f, 0.f, INFINITY, {0.f, 0.f}}; }

// Whether the crossing `c` surely fails consider_line's test: t outside [0, 1], s behind a non-negative near plane,
// or s beyond best_s. Multiplications instead of divisions, with margins far wider than rounding, so that it
// never rejects a crossing the exact test would keep (a NaN term fails its own comparisons, so it rejects
// nothing the exact test would keep either).
JS_FN bool surely_missed(CrossingTerms c, float near, float best_s) {
  const float sign = c.den < 0.f ? -1.f : 1.f;
  const float den = fabsf(c.den), ns = sign * c.ns, nt = sign * c.nt;
  const float tiny = 1.e-30f * den;  // below it a quotient could round to -0, which counts as 0
  const float far = best_s * den;    // inf for no hit yet; den > 0 once not parallel
  return nearly_parallel(c.den) | (nt < -tiny) | (nt > 1.0001f * den) | ((near >= 0.f) & (ns < -tiny)) |
         (ns > far + 1.e-4f * fabsf(far));
}

// Keeps the nearer of the best hit so far and line `index` (a-b). `s` is in units of the ray's length. Where `tied`
// is given, it is set when a hit is turned down only by the 1e-4 margin (see settled).
JS_FN void consider_line(Vec p, Vec u, float near, int index, Vec a, Vec b, RayHit* best, float* best_s,
                         bool* tied = nullptr) {
  const Vec v = b - a;
  const CrossingTerms c = crossing_terms(p, u, a, v);
  if (surely_missed(c, near, *best_s)) return;  // most lines: their divisions skipped (never a tie's)
  const Crossing q = divided(c);
  const bool hit = (0.f <= q.t) & (q.t <= 1.f) & (near < q.s);
  // the 1e-4 margin stops z-fighting between lines that meet
  if (hit & (q.s < *best_s - 1.e-4f)) {
    *best_s = q.s;
    best->index = index;
    best->location = q.t;
    best->line = v;  // the cosine waits for the nearest line: a sqrt and a division per nearer hit saved
  } else if (tied && hit && (q.s < *best_s)) {
    *tied = true;
  }
}

// A ray from an agent's centre: p + s u for s > near (the agent's own disc is not seen).
struct Ray {
  Vec p, u;
  float ulen, near;
};

// A viewer's position and facing, which every ray of its view starts from.
struct Viewpoint {
  Vec p;
  Rotation facing;
};

JS_FN Viewpoint viewpoint(const float* angles, const float* positions, int a) {
  return {load_vec(positions + 2 * a), rotation(angles[a])};
}

// Ray r of R from a viewer.
JS_FN Ray make_ray(Viewpoint eye, int r, int R, float half_width, float radius) {
  const Vec u = rotate(eye.facing, ray_direction(r, R, half_width));
  const float ulen = length(u);
  return {eye.p, u, ulen, radius / ulen};
}

// Endpoints of line i of one env, in the env's line order (agents' model lines, then walls).
JS_FN void scene_line(const EnvScene& scene, const float* angles, const float* positions, int n_agents, int i,
                      Vec* a, Vec* b) {
  const int first_wall = n_agents * MODEL_LINES;
  if (i < first_wall) {
    const int o = i / MODEL_LINES;
    model_line(rotation(angles[o]), load_vec(positions + 2 * o), i % MODEL_LINES, a, b);
  } else {
    const float* w = scene.walls + 4 * (i - first_wall);
    *a = load_vec(w);
    *b = load_vec(w + 2);
  }
}

JS_FN int scene_lines(const EnvScene& scene, int n_agents) { return n_agents * MODEL_LINES + scene.n_walls; }

// The directions of rays first..last-1 of R from p: a wedge between `lo` (the rightmost) and `hi`. It is widened
// by more than half a ray's spacing each side, so that a line outside it cannot be hit by any of its rays,
// rounding included. Culling lines against it skips only lines that could never be hit, so the nearest hit,
// and the order in which the remaining lines are considered, are unchanged.
struct Wedge {
  Vec p, lo, hi;
};

JS_FN Wedge ray_wedge(Viewpoint eye, int first, int last, int R, float half_width) {
  // one division: the edges need not round as ray_direction does, since the margin is a whole ray's spacing
  const float step = half_width / (float)R;  // half a ray's spacing
  const float margin = fmaxf(2.f * step, 1.e-3f);
  const float lo = (float)(R - 2 * (last - 1) - 1) * step, hi = (float)(R - 2 * first - 1) * step;
  return {eye.p, rotate(eye.facing, Vec{1.f, lo - margin}), rotate(eye.facing, Vec{1.f, hi + margin})};
}

// False only if no ray inside the wedge can meet the segment a-b: a separating axis exists among the wedge's
// two edges and the segment's own line. NaN coordinates never cull.
JS_FN bool may_hit(const Wedge& w, Vec a, Vec b) {
  const Vec qa = a - w.p, qb = b - w.p;
  if ((cross(w.lo, qa) < 0.f) & (cross(w.lo, qb) < 0.f)) return false;  // both right of the wedge
  if ((cross(w.hi, qa) > 0.f) & (cross(w.hi, qb) > 0.f)) return false;  // both left of it
  const Vec ab = b - a;
  const float side = cross(ab, w.p - a), lo = cross(ab, w.lo), hi = cross(ab, w.hi);
  if ((side > 0.f) & (lo >= 0.f) & (hi >= 0.f)) return false;  // every ray heads away from the line
  if ((side < 0.f) & (lo <= 0.f) & (hi <= 0.f)) return false;
  return true;
}

// One pass of a view's search for its rays' nearest hits: the agents' model lines, then a set of walls, of which only
// those that come within `reach` of the viewer count. A view's first passes take its cell's lists for the grid's
// reaches in turn (a ray's hit is usually near); its last takes every wall (reach inf). Lines keep the env's line
// order in every pass.
struct Pass {
  WallSet walls;
  float reach;
};

// Pass `level` of a search from grid cell c (-1: off the grid, where the only pass is the last).
JS_FN Pass search_pass(const EnvScene& scene, int c, int level) {
  if ((c < 0) || (level >= scene.grid.n_reaches)) return {all_walls(scene), INFINITY};  // || : no grid read off it
  return {cell_walls(scene, c, level), grid_reach(scene.grid, level)};
}

JS_FN bool last_pass(const Pass& pass) { return !pass.walls.listed; }

// Views start their passes at the grid's first reach of at least VIEW_REACH metres: the nearer ones serve physics
// (a 1 m first pass cost mazes' views 7%).
constexpr float VIEW_REACH = 2.f;

JS_FN int first_view_level(const Grid& g) {
  int level = 0;
  while ((level < g.n_reaches) && (grid_reach(g, level) < VIEW_REACH)) level++;
  return level;
}

JS_FN int pass_lines(const Pass& pass, int n_agents) { return n_agents * MODEL_LINES + pass.walls.count; }

// The env line index of entry i of a pass.
JS_FN int pass_line(const Pass& pass, int n_agents, int i) {
  const int first_wall = n_agents * MODEL_LINES;
  return i < first_wall ? i : first_wall + wall_at(pass.walls, i - first_wall);
}

// Whether a pass's nearest hit for a ray (best_s, in units of the ray's length ulen) is final, `tied` telling
// whether consider_line turned any hit down only by its 1e-4 margin. With no such tie, every line the pass kept
// before its final hit F, and every line it left out (more than `reach` metres off, so, with F well within the
// reach, at s beyond F's by more than 2e-4: 1% and 2 cm cover rounding in a grazing ray's hit), lies beyond F's
// hit by more than 1e-4, so that the search over all lines in order also keeps F and nothing after it. (A chain
// of ties could carry a far line's effect down to F: walls stacked 0.06 mm apart did.) A ray with no hit is never
// final.
JS_FN bool settled(const Pass& pass, float best_s, float ulen, bool tied) {
  return !tied & ((best_s + 2.e-4f) * ulen * 1.01f + .02f <= pass.reach);
}

// The hit's distance and cosine, once every line has been considered. `best_s` is in units of the ray's length.
JS_FN RayHit finish_hit(RayHit best, float best_s, Vec u, float ulen) {
  if (best.index >= 0) {
    best.distance = best_s * ulen;
    // clamped: rounding can put a grazing hit's cosine past 1
    best.dot = fmaxf(fminf(dot(u, best.line) / (ulen * length(best.line) + 1.e-6f), 1.f), -1.f);
  }
  return best;
}

// Linear filter over a line's `width` texels at fraction x along it: texels l and r with weights lw, rw.
struct Filter {
  int l, r;
  float lw, rw;
};

JS_FN Filter texture_filter(float x, int width) {
  const float y = fminf(x * (width + 1), (float)(width - 1));
  const int l = (int)fmaxf(y - 1.f, 0.f);
  const int r = (int)fminf(y, (float)(width - 1));
  const float ld = fabsf(y - (l + 1)) + 1.e-3f;
  const float rd = fabsf(y - (r + 1)) + 1.e-3f;
  const float inv = 1.f / (ld + rd);  // one division for both weights
  return {l, r, rd * inv, ld * inv};
}

struct Colour {
  float r, g, b;  // linear RGB
};

// Whether a hit is on an agent's model, whose light is worked out at render time (`live_light`); walls' is baked.
JS_FN bool on_model(RayHit hit, int n_agents) { return (hit.index >= 0) & (hit.index < n_agents * MODEL_LINES); }

// The point a model hit lies at.
JS_FN Vec model_point(const float* angles, const float* positions, RayHit hit) {
  const int o = hit.index / MODEL_LINES;
  Vec a, b;
  model_line(rotation(angles[o]), load_vec(positions + 2 * o), hit.index % MODEL_LINES, &a, &b);
  return lerp(a, b, hit.location);
}

// The light at a model hit's point, occluded by walls only (0, unused, for any other hit).
JS_FN float live_light(const EnvScene& scene, const float* angles, const float* positions, int n_agents, RayHit hit) {
  if (!on_model(hit, n_agents)) return 0.f;
  return light_intensity(model_point(angles, positions, hit), scene.lights, scene.n_lights, scene.walls, scene.n_walls);
}

// Colour of a hit: (1 - dot^2) * light * filtered texel colour; black for none. `live` is the light of a model
// hit (from live_light, or the CUDA warp's shared version of it); walls use their baked light.
JS_FN Colour shade(const EnvScene& scene, int n_agents, RayHit hit, float live) {
  if (hit.index < 0) return {0.f, 0.f, 0.f};
  const int first_wall = n_agents * MODEL_LINES;
  const bool is_model = hit.index < first_wall;
  const int* offsets = is_model ? scene.model_texels + hit.index % MODEL_LINES
                                : scene.wall_texels + (hit.index - first_wall);
  const int start = offsets[0];
  const Filter f = texture_filter(hit.location, offsets[1] - start);
  const float light = is_model ? live : f.lw * scene.baked[start + f.l] + f.rw * scene.baked[start + f.r];
  const float k = (1.f - hit.dot * hit.dot) * light;
  const float* l = scene.texels + 3 * (start + f.l);
  const float* r = scene.texels + 3 * (start + f.r);
  return {k * (f.lw * l[0] + f.rw * r[0]), k * (f.lw * l[1] + f.rw * r[1]), k * (f.lw * l[2] + f.rw * r[2])};
}

// ---------------------------------------------------------------------------------------------------
// Batched entry points: one call per item, shared by the CPU loop and the CUDA threads.
//
// Every buffer may carry leading batch dimensions (from vmap); batch element b of a buffer starts at
// b times its per-element size. Envs are numbered flat over the batch, e = b * n_envs + n.

struct SceneryArrays {
  const int* env_geometry;    // (B, n_envs) geometry of each env
  const float* walls;         // (B, W, 2, 2) every distinct geometry's walls, packed
  const int* wall_offsets;    // (B, G + 1) geometry g's walls are wall_offsets[g] .. wall_offsets[g + 1]
  const float* lights;        // (B, L, 3) x, y, intensity
  const int* light_offsets;   // (B, G + 1)
  const float* texels;        // (B, T, 3) linear RGB
  const float* baked;         // (B, T) baked light of static texels
  const int* texel_offsets;   // (B, MODEL_LINES + W + 1) texels of the model lines, then of each wall
  long n_envs, n_geometries, n_walls, n_lights, n_texels;
  // Every geometry's grid (see Grid); null grid_frames: none.
  const float* grid_frames;   // (B, G, 3 + n_reaches) corner x, y, cells per metre, reaches
  const int* grid_shapes;     // (B, G, 3) nx, ny, first cell
  const int* cell_offsets;    // (B, n_cell_offsets) = (B, n_cells * n_reaches + 1)
  const int* cell_walls;      // (B, n_cell_walls)
  long n_reaches, n_cell_offsets, n_cell_walls;
};

// Geometry g's grid in batch element b (g valid); no grid (a null frame) if its shape does not fit the buffers.
JS_FN Grid geometry_grid(const SceneryArrays& s, long b, int g) {
  Grid grid = {nullptr, 0, 0, 0, nullptr, nullptr, 0};
  if (!s.grid_frames) return grid;
  const long G = s.n_geometries, L = s.n_reaches;
  const int* shape = s.grid_shapes + 3 * (b * G + g);
  const long nx = shape[0], ny = shape[1], first = shape[2], cells = s.n_cell_offsets;
  // the last offset it may read, (first + nx * ny) * L, within the buffer; checked without overflow
  if ((nx < 1) | (ny < 1) | (first < 0) | (nx > cells) | (ny > cells) || first + nx * ny > (cells - 1) / L) return grid;
  return {s.grid_frames + (3 + L) * (b * G + g), (int)nx, (int)ny, (int)L,
          s.cell_offsets + b * s.n_cell_offsets + first * L, s.cell_walls + b * s.n_cell_walls, (int)s.n_cell_walls};
}

// The walls and grid of geometry g in batch element b, all that a search for hits reads (no lights or texels). An
// out-of-range geometry index gives an empty scene rather than a bad read.
JS_FN EnvScene geometry_walls(const SceneryArrays& s, long b, int g) {
  const long G = s.n_geometries;
  const bool valid = (g >= 0) & (g < G);
  const int* wall_offsets = s.wall_offsets + b * (G + 1);
  const int w0 = valid ? clamp_index(wall_offsets[g], 0, (int)s.n_walls) : 0;
  const int w1 = valid ? clamp_index(wall_offsets[g + 1], w0, (int)s.n_walls) : 0;
  EnvScene scene = {s.walls + 4 * (b * s.n_walls + w0), (int)(w1 - w0), nullptr, 0, nullptr, nullptr, nullptr,
                    nullptr, {nullptr, 0, 0, 0, nullptr, nullptr, 0}};
  if (valid) scene.grid = geometry_grid(s, b, g);
  return scene;
}

// `scene` (geometry_walls(s, b, g)) with its lights and texels added.
JS_FN EnvScene with_shading(const SceneryArrays& s, long b, int g, EnvScene scene) {
  const long G = s.n_geometries;
  const bool valid = (g >= 0) & (g < G);
  if (s.lights) {
    const int* light_offsets = s.light_offsets + b * (G + 1);
    const int l0 = valid ? clamp_index(light_offsets[g], 0, (int)s.n_lights) : 0;
    const int l1 = valid ? clamp_index(light_offsets[g + 1], l0, (int)s.n_lights) : 0;
    scene.lights = s.lights + 3 * (b * s.n_lights + l0);
    scene.n_lights = (int)(l1 - l0);
  }
  if (s.texels) {
    const long w0 = (scene.walls - s.walls) / 4 - b * s.n_walls;
    const int* texel_offsets = s.texel_offsets + b * (MODEL_LINES + s.n_walls + 1);
    scene.texels = s.texels + 3 * b * s.n_texels;
    scene.baked = s.baked + b * s.n_texels;
    scene.model_texels = texel_offsets;
    scene.wall_texels = texel_offsets + MODEL_LINES + w0;
  }
  return scene;
}

// Whether views search through the grid's passes (see Pass) rather than all walls in one: the passes' lookups and
// repeats cost more than they save on geometries of a hundred walls or so (floor plans: 11% slower with them), and
// save more than they cost on a few hundred (24 x 24 mazes, about 300 walls: 34% faster). Physics always uses the
// grid. The results are the same either way.
constexpr long GRID_SEARCH_WALLS = 192;  // mean walls per geometry

JS_FN bool search_grid(const SceneryArrays& s) {
  return (s.n_reaches > 0) & (s.n_walls >= GRID_SEARCH_WALLS * s.n_geometries);
}

// The whole scene of geometry g in batch element b.
JS_FN EnvScene geometry_scene(const SceneryArrays& s, long b, int g) {
  return with_shading(s, b, g, geometry_walls(s, b, g));
}

// The scene of flat env e.
JS_FN EnvScene env_scene(const SceneryArrays& s, long e) { return geometry_scene(s, e / s.n_envs, s.env_geometry[e]); }

// Views are rendered for the first n_viewers agents of each env only.
struct RenderOutputs {
  int* indices;       // (B, n_envs, n_viewers, R)
  float* locations;   // (B, n_envs, n_viewers, R)
  float* dots;        // (B, n_envs, n_viewers, R)
  float* distances;   // (B, n_envs, n_viewers, R)
  float* screen;      // (B, n_envs, n_viewers, R, 3)
};

// One agent's view within the batch: view v = e * n_viewers + a, for flat env e and agent a < n_viewers.
struct View {
  EnvScene scene;
  const float* angles;     // (n_agents,) of the view's env
  const float* positions;  // (n_agents, 2)
  int agent;
};

// The view of agent `agent` of flat env e, which is in batch element b = e / n_envs (passed in, since the CUDA
// kernel has a faster division).
JS_FN View view_at(const SceneryArrays& s, const float* angles, const float* positions, int n_agents, long b, long e,
                   int agent) {
  return {geometry_scene(s, b, s.env_geometry[e]), angles + e * n_agents, positions + 2 * e * n_agents, agent};
}

JS_FN View view_of(const SceneryArrays& s, const float* angles, const float* positions, int n_agents,
                   int n_viewers, long v) {
  const long e = v / n_viewers;
  return view_at(s, angles, positions, n_agents, e / s.n_envs, e, (int)(v % n_viewers));
}

// Whether line i of a view's env is one of the viewer's own model lines, which no ray of its view can hit when
// the near plane (radius) lies beyond the model: every model point is within MODEL_REACH of the centre (corner
// (1, .5) scaled by AGENT_WIDTH / 2), and a hit must be farther than radius. Skipping them changes nothing.
constexpr float MODEL_REACH = AGENT_WIDTH / 2.f * 1.1180340f;

JS_FN bool hidden_own_line(const View& view, int i, float radius) {
  return (i / MODEL_LINES == view.agent) & (radius > 1.001f * MODEL_REACH);  // a margin over rounding
}

// Writes ray `item` = v * R + r of the outputs, shading its hit (`live`: its light if on a model).
JS_FN void store_ray(const View& view, int n_agents, RayHit hit, float live, long item, RenderOutputs out) {
  out.indices[item] = hit.index;
  out.locations[item] = hit.location;
  out.dots[item] = hit.dot;
  out.distances[item] = hit.distance;
  const Colour c = shade(view.scene, n_agents, hit, live);
  out.screen[3 * item] = c.r;
  out.screen[3 * item + 1] = c.g;
  out.screen[3 * item + 2] = c.b;
}

// ---------------------------------------------------------------------------------------------------
// Observations: a view's rays reduced to its image columns in the render call itself (render + observation in
// one kernel), so that the full-resolution render never goes to memory.

// Depth in [0, 1]: 1 at the near plane `radius` metres from the centre, falling to 0 at max_depth metres beyond
// it; 0 for a miss (distance inf).
JS_FN float depth_of(float distance, float radius, float max_depth) {
  return 1.f - fminf(fmaxf((distance - radius) / max_depth, 0.f), 1.f);
}

// What one ray adds to its column's averages.
struct Pixel {
  Colour rgb;
  float depth;
};

// `live`: the hit's light if it is on a model (see shade).
JS_FN Pixel pixel_of(const View& view, int n_agents, RayHit hit, float live, float radius, float max_depth) {
  return {shade(view.scene, n_agents, hit, live), depth_of(hit.distance, radius, max_depth)};
}

JS_FN Pixel add(Pixel sum, Pixel p) {
  return {{sum.rgb.r + p.rgb.r, sum.rgb.g + p.rgb.g, sum.rgb.b + p.rgb.b}, sum.depth + p.depth};
}

// Whether a column's k pixels are summed pairwise, ((p0 + p1) + (p2 + p3)) + ..., as a warp's butterfly of
// shuffles adds them (k a power of two), rather than in ray order; both handlers sum in the same order.
JS_FN bool pairwise_sum(int k) { return (k & (k - 1)) == 0; }

// The sum of a column's k pixels p[0 .. k-1], in the order above; p is overwritten.
JS_FN Pixel column_sum(Pixel* p, int k) {
  if (!pairwise_sum(k)) {
    for (int j = 1; j < k; j++) p[0] = add(p[0], p[j]);
    return p[0];
  }
  for (int width = 1; width < k; width *= 2) {
    for (int j = 0; j < k; j += 2 * width) p[j] = add(p[j], p[j + width]);
  }
  return p[0];
}

// A column's mean: one division, then products (exact for a count that is a power of two).
JS_FN Pixel mean(Pixel sum, int count) {
  const float inv = 1.f / (float)count;
  return {{sum.rgb.r * inv, sum.rgb.g * inv, sum.rgb.b * inv}, sum.depth * inv};
}

// Column outputs, each (B, n_envs, n_viewers, W) (rgb with a trailing 3); a null one is not wanted.
struct ObserveOutputs {
  float* rgb;        // mean linear RGB of the column's rays
  float* depth;      // mean depth_of of the column's rays
  int* indices;      // the line the column's middle ray hit (-1 for none)
  float* locations;  // and where along it
};

// Writes column `item` = v * W + c: the mean of its rays' pixels, and the hit of its middle ray.
JS_FN void store_column(ObserveOutputs out, long item, Pixel mean, RayHit middle) {
  if (out.rgb) {
    out.rgb[3 * item] = mean.rgb.r;
    out.rgb[3 * item + 1] = mean.rgb.g;
    out.rgb[3 * item + 2] = mean.rgb.b;
  }
  if (out.depth) out.depth[item] = mean.depth;
  if (out.indices) out.indices[item] = middle.index;
  if (out.locations) out.locations[item] = middle.location;
}

// Progress of agent `item` = e * n_agents + a: the largest fraction in [0, 1] of its move velocity/fps it can make
// before touching a wall or another agent. positions, velocity: (B, n_envs, n_agents, 2).
JS_FN float progress_item(const SceneryArrays& s, const float* positions, const float* velocity, int n_agents,
                          float fps, float radius, long item) {
  const long e = item / n_agents;
  const int a = (int)(item % n_agents);
  const EnvScene scene = env_scene(s, e);
  const float *p = positions + 2 * e * n_agents, *v = velocity + 2 * e * n_agents;
  const Move m = move_of(a, p, v, fps);
  const float agents = agents_progress(m, a, n_agents, p, v, fps, radius);
  return fminf(agents, walls_progress(m, move_walls(scene, m, radius), radius));
}

struct AgentArrays {
  float* angles;       // (B, n_envs, n_agents) degrees
  float* positions;    // (B, n_envs, n_agents, 2) metres
  float* velocity;     // (B, n_envs, n_agents, 2) metres per second
  float* angvelocity;  // (B, n_envs, n_agents) degrees per second
};

JS_FN Pose load_pose(const float* angles, const float* positions, const float* velocity, const float* angvelocity,
                     long i) {
  return {angles[i], positions[2 * i], positions[2 * i + 1], velocity[2 * i], velocity[2 * i + 1], angvelocity[i]};
}

JS_FN void store_pose(AgentArrays out, long i, Pose p) {
  out.angles[i] = p.angle;
  out.positions[2 * i] = p.x;
  out.positions[2 * i + 1] = p.y;
  out.velocity[2 * i] = p.vx;
  out.velocity[2 * i + 1] = p.vy;
  out.angvelocity[i] = p.angvelocity;
}

// Baked light at point `item` of (B, P) points; point_geometry: (B, P) geometry of each point.
JS_FN float bake_item(const SceneryArrays& s, const float* points, long item) {
  const EnvScene scene = env_scene(s, item);
  return light_intensity(load_vec(points + 2 * item), scene.lights, scene.n_lights, scene.walls, scene.n_walls);
}

}  // namespace jaxstep
