from mlx_distill.cli import main

raise SystemExit(main())
