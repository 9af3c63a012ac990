package npb

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

func TestRankRules(t *testing.T) {
	tests := []struct {
		k     Kernel
		ranks int
		want  error
	}{
		{EP, 4, nil}, {EP, 7, nil}, {EP, 64, nil}, {EP, 3, ErrRankRange}, {EP, 65, ErrRankRange},
		{IS, 8, nil}, {IS, 12, ErrRankShape}, {IS, 128, ErrRankRange},
		{CG, 32, nil}, {CG, 6, ErrRankShape},
		{MG, 64, nil}, {MG, 48, ErrRankShape},
		{FT, 16, nil}, {FT, 9, ErrRankShape},
		{LU, 4, nil}, {LU, 36, ErrRankShape},
		{BT, 9, nil}, {BT, 36, nil}, {BT, 8, ErrRankShape}, {BT, 1, ErrRankRange},
		{SP, 49, nil}, {SP, 32, ErrRankShape},
		{"XX", 4, ErrUnknownKernel},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d", tc.k, tc.ranks), func(t *testing.T) {
			_, err := New(tc.k, ClassA, tc.ranks)
			if !errors.Is(err, tc.want) {
				t.Errorf("New(%s, A, %d): got %v, want %v", tc.k, tc.ranks, err, tc.want)
			}
		})
	}
	if _, err := New(EP, "D", 4); !errors.Is(err, ErrUnknownClass) {
		t.Errorf("class D: got %v, want %v", err, ErrUnknownClass)
	}
	// Class S is too small for 64 ranks of BT (cells of 1.5 points).
	if _, err := New(BT, ClassS, 64); !errors.Is(err, ErrTooSmall) {
		t.Errorf("BT S 64: got %v, want %v", err, ErrTooSmall)
	}
}

// allValid yields every accepted (kernel, class, ranks).
func allValid(t *testing.T, f func(t *testing.T, p Profile)) {
	t.Helper()
	for _, k := range Kernels {
		for _, c := range Classes {
			for r := MinRanks; r <= MaxRanks; r++ {
				p, err := New(k, c, r)
				if err != nil {
					continue
				}
				t.Run(fmt.Sprintf("%s.%s.%d", k, c, r), func(t *testing.T) { f(t, p) })
			}
		}
	}
}

func TestProfileSanity(t *testing.T) {
	allValid(t, func(t *testing.T, p Profile) {
		if p.Iterations < 1 || p.FootprintBytes < 1 || p.ComputePerIter <= 0 {
			t.Fatalf("got iterations %d footprint %d compute %v, want all positive", p.Iterations, p.FootprintBytes, p.ComputePerIter)
		}
		if p.HotFraction <= 0 || p.HotFraction > 1 {
			t.Errorf("got hot fraction %v, want (0,1]", p.HotFraction)
		}
		want := float64(p.HotBytes()) / p.ComputePerIter.Seconds()
		if math.Abs(p.WriteRate-want)/want > 1e-3 {
			t.Errorf("got write rate %v, want %v", p.WriteRate, want)
		}
		for _, m := range append(p.IterationMessages(), p.FinalMessages()...) {
			if m.Src == m.Dst || m.Src < 0 || m.Dst < 0 || m.Src >= p.Ranks || m.Dst >= p.Ranks || m.Bytes < 1 || m.Step < 0 {
				t.Fatalf("bad message %+v", m)
			}
		}
		msgs := p.IterationMessages()
		for i := 1; i < len(msgs); i++ {
			a, b := msgs[i-1], msgs[i]
			if a.Step > b.Step || (a.Step == b.Step && (a.Src > b.Src || (a.Src == b.Src && a.Dst > b.Dst))) {
				t.Fatalf("messages %d,%d out of order: %+v %+v", i-1, i, a, b)
			}
		}
	})
}

func sum(m []Message) (n int, bytes int64) {
	for _, x := range m {
		n++
		bytes += x.Bytes
	}
	return
}

// TestPatternFormulas checks the message count and volume of one iteration
// against a closed formula for each pattern.
func TestPatternFormulas(t *testing.T) {
	allValid(t, func(t *testing.T, p Profile) {
		n, bytes := sum(p.IterationMessages())
		r := p.Ranks
		R := int64(r)
		l := log2(r)
		var wantN int
		var wantB int64 = -1
		switch p.Kernel {
		case EP:
			wantN, wantB = 0, 0
		case IS:
			key := p.size.keys / R / R * 4
			wantN = r*l + 2*r*(r-1)
			wantB = R*int64(l)*4096 + R*(R-1)*4 + R*(R-1)*key
		case CG:
			lc := log2(p.grid.px)
			self := p.grid.py // diagonal ranks swap with themselves
			if p.grid.px != p.grid.py {
				self = 2 * p.grid.py
			}
			matvec := r*lc + r - self
			wantN = 26*matvec + 52*r*lc // 25*2 dots + ||r|| + outer norms
		case MG:
			axes := 0
			for _, g := range []int{p.grid.px, p.grid.py, p.grid.pz} {
				if g > 1 {
					axes++
				}
			}
			lt := log2(p.size.nx)
			halos := (lt - 1) + 1 + 2*(lt-1) + 1
			wantN = halos * axes * 2 * r
		case FT:
			total := int64(p.size.nx) * int64(p.size.ny) * int64(p.size.nz) * 16
			if p.grid.py == 1 {
				wantN = r*(r-1) + (r - 1)
				wantB = R*(R-1)*(total/R/R) + 16*(R-1)
			} else {
				np1, np2 := p.grid.px, p.grid.py
				wantN = r*(np1-1) + r*(np2-1) + (r - 1)
			}
		case LU:
			px, py := p.grid.px, p.grid.py
			links := (px-1)*py + px*(py-1)
			wantN = 2*links + 2*(p.size.nz-2)*links
		case BT, SP:
			q := p.grid.q
			wantN = 6*r + 3*2*(q-1)*r
			cell := int64((p.size.nx + q - 1) / q)
			buf := solverDoubles[p.Kernel]
			wantB = 6*R*int64(q-1)*cell*cell*80 + 3*int64(q-1)*R*(buf[0]+buf[1])*cell*cell*8
		}
		if n != wantN {
			t.Errorf("got %d messages, want %d", n, wantN)
		}
		if wantB >= 0 && bytes != wantB {
			t.Errorf("got %d bytes, want %d", bytes, wantB)
		}
		fn, _ := sum(p.FinalMessages())
		wantF := 2 * (r - 1)
		if p.Kernel == IS {
			wantF += r - 1
		}
		if fn != wantF {
			t.Errorf("final: got %d messages, want %d", fn, wantF)
		}
	})
}

func TestKnownSizes(t *testing.T) {
	tests := []struct {
		k      Kernel
		c      Class
		iters  int
		mop    float64 // published class total, Mop
		relTol float64
	}{
		{IS, ClassA, 10, 83.9, 0.01},
		{CG, ClassA, 15, 1496, 0.01},
		{MG, ClassA, 4, 3892, 0.01},
		{FT, ClassA, 6, 7136, 0.01},
		{LU, ClassA, 250, 119300, 0.01},
		{BT, ClassA, 200, 168300, 0.01},
		{SP, ClassA, 400, 85000, 0.01},
		{EP, ClassA, 4096 / 16, 536.9, 0.01},
		{CG, ClassB, 75, 0, 0},
		{MG, ClassC, 20, 0, 0},
	}
	for _, tc := range tests {
		t.Run(string(tc.k)+string(tc.c), func(t *testing.T) {
			p, err := New(tc.k, tc.c, 16)
			if err != nil {
				t.Fatal(err)
			}
			if p.Iterations != tc.iters {
				t.Errorf("got %d iterations, want %d", p.Iterations, tc.iters)
			}
			if tc.mop > 0 && math.Abs(p.TotalMop-tc.mop)/tc.mop > tc.relTol {
				t.Errorf("got %.1f Mop, want %.1f", p.TotalMop, tc.mop)
			}
		})
	}
	// FT class A on 16 ranks: 256*256*128 complex over 16 ranks, all-to-all
	// blocks of 8 MiB/16/16 * 16 B.
	ft, _ := New(FT, ClassA, 16)
	if got, want := ft.IterationMessages()[0].Bytes, int64(256*256*128*16/16/16); got != want {
		t.Errorf("FT A/16 transpose block: got %d, want %d", got, want)
	}
	// IS class A on 8 ranks: key block 2^23/64 keys of 4 bytes.
	is, _ := New(IS, ClassA, 8)
	ms := is.IterationMessages()
	if got, want := ms[len(ms)-1].Bytes, int64(1<<23/64*4); got != want {
		t.Errorf("IS A/8 key block: got %d, want %d", got, want)
	}
	// MG faces shrink 4x per level on 8 ranks (2x2x2): 128x128 doubles on the finest.
	mg, _ := New(MG, ClassA, 8)
	if got, want := mg.MGLevelFace(8), int64(128*128*8); got != want {
		t.Errorf("MG A/8 finest face: got %d, want %d", got, want)
	}
	if got, want := mg.MGLevelFace(7), int64(64*64*8); got != want {
		t.Errorf("MG A/8 level 7 face: got %d, want %d", got, want)
	}
	// LU class A grid on 32 ranks: 8 x 4 (lu.f proc_grid).
	lu, _ := New(LU, ClassA, 32)
	if px, py, _ := lu.Grid(); px != 8 || py != 4 {
		t.Errorf("LU 32 grid: got %dx%d, want 8x4", px, py)
	}
	// CG on 8 ranks: 4 columns x 2 rows.
	cg, _ := New(CG, ClassA, 8)
	if px, py, _ := cg.Grid(); px != 4 || py != 2 {
		t.Errorf("CG 8 grid: got %dx%d, want 4x2", px, py)
	}
	// Compute time is the total operation count over ranks, iterations, reference rate.
	bt, _ := New(BT, ClassA, 16)
	want := time.Duration(bt.TotalMop / 16 / 200 / bt.RefMops * float64(time.Second))
	if bt.ComputePerIter != want {
		t.Errorf("BT A/16 compute: got %v, want %v", bt.ComputePerIter, want)
	}
}

func TestDeterministic(t *testing.T) {
	for _, k := range Kernels {
		r := 16
		a, _ := New(k, ClassW, r)
		b, _ := New(k, ClassW, r)
		ma, mb := a.IterationMessages(), b.IterationMessages()
		if len(ma) != len(mb) {
			t.Fatalf("%s: got %d and %d messages", k, len(ma), len(mb))
		}
		for i := range ma {
			if ma[i] != mb[i] {
				t.Fatalf("%s: message %d differs: %+v vs %+v", k, i, ma[i], mb[i])
			}
		}
	}
}
