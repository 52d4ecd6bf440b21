from vrlms_edge.cli import main

raise SystemExit(main())
